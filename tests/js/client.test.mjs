// fastwsrpc.js against a real fastwsrpc server (examples/browser/app.py), under Node's own test runner.
//
// tests/test_node_client.py starts the server and runs `node --test` with its
// URL in FASTWSRPC_URL. Node 20 has no global WebSocket: the `ws` package's is
// passed, which is the point of the `WebSocket` option.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";

import { RpcClient, RpcConnectionError, RpcError, RpcTimeoutError, connect } from "../../fastwsrpc/js/fastwsrpc.js";

const URL = process.env.FASTWSRPC_URL;
const options = { timeout: 10_000 };

if (!URL) throw new Error("FASTWSRPC_URL is not set: run this through tests/test_node_client.py");

/** What the server may call on this "page". */
function pageMethods(seen = {}) {
  return {
    whoami: () => "node",
    multiply({ x, y }) {
      return x * y;
    },
    concat(a, b) {
      return `${a}${b}`;
    },
    refuse() {
      throw new RpcError(-32011, "not today", { retry: false });
    },
    crash() {
      throw new TypeError("a bug in the page");
    },
    lookup() {
      return this.table.answer; // `this` is the methods object
    },
    table: { answer: 42 },
    _secret: () => "never",
    waitForCancel(context) {
      return new Promise((_resolve, reject) => {
        context.signal.addEventListener("abort", () => {
          seen.cancelled?.(context.signal.reason.name);
          reject(context.signal.reason);
        });
      });
    },
    async nestedFailure(context) {
      await context.rpc.other.no_such_method();
    },
    welcome(params) {
      seen.welcome = params.server;
    },
  };
}

describe("calls to the server", options, () => {
  let rpc;
  const seen = {};
  before(async () => {
    rpc = await connect(URL, { WebSocket, methods: pageMethods(seen) });
  });
  after(() => rpc.close());

  test("named params: one plain object", async () => {
    assert.equal(await rpc.other.add({ a: 1, b: 2 }), 3);
    assert.equal(await rpc.call("add", { a: 2, b: 5 }), 7);
  });

  test("positional params: anything else", async () => {
    assert.equal(await rpc.other.subtract(10, 4), 6);
    assert.equal(await rpc.other.sum_all(1, 2, 3, 4), 10);
    assert.equal(await rpc.call("subtract", [1, 4]), -3);
  });

  test("no params", async () => {
    assert.deepEqual((await rpc.other.tags())[0], "fastwsrpc");
  });

  test("the client is connected, and `then` is never a remote method", async () => {
    assert.equal(rpc.connected, true);
    assert.equal(rpc.state, "open");
    assert.equal(rpc.other.then, undefined);
    assert.ok(rpc instanceof RpcClient);
  });

  test("a remote error: RpcError with code, message and data", async () => {
    const error = await rpc.other.withdraw({ amount: 100 }).catch((e) => e);
    assert.ok(error instanceof RpcError);
    assert.equal(error.code, -32010);
    assert.equal(error.message, "insufficient funds");
    assert.deepEqual(error.data, { balance: 10, requested: 100 });
    assert.equal(error.response.id !== undefined, true);
  });

  test("a server bug is -32603 without its text; an unknown method is -32601", async () => {
    const crash = await rpc.other.crash().catch((e) => e);
    assert.equal(crash.code, -32603);
    assert.doesNotMatch(crash.message, /hunter2/);
    const missing = await rpc.call("no_such_method").catch((e) => e);
    assert.equal(missing.code, -32601);
    const bad = await rpc.other.add({ a: 1 }).catch((e) => e);
    assert.equal(bad.code, -32602);
  });

  test("the server calls the page during the page's own call", async () => {
    assert.equal(await rpc.other.greet(), "hello, node");
  });

  test("the server calls the page with named and positional params", async () => {
    assert.deepEqual(await rpc.other.ask_page({ method: "multiply", params: { x: 6, y: 7 } }), { result: 42 });
    assert.deepEqual(await rpc.other.ask_page({ method: "concat", params: ["a", "b"] }), { result: "ab" });
    assert.deepEqual(await rpc.other.ask_page({ method: "lookup" }), { result: 42 });
  });

  test("the page's errors reach the server with their codes", async () => {
    const refused = await rpc.other.ask_page({ method: "refuse" });
    assert.deepEqual(refused, { error: { code: -32011, message: "not today", data: { retry: false } } });
    const crashed = await rpc.other.ask_page({ method: "crash" });
    assert.equal(crashed.error.code, -32603);
    assert.doesNotMatch(crashed.error.message, /bug in the page/);
    for (const name of ["nope", "_secret", "table", "constructor", "toString", "hasOwnProperty"]) {
      const missing = await rpc.other.ask_page({ method: name });
      assert.equal(missing.error.code, -32601, name);
    }
    const nested = await rpc.other.ask_page({ method: "nestedFailure" });
    assert.equal(nested.error.code, -32603);
    assert.equal(nested.error.data.code, -32601);
  });

  test("the server discovers the page's methods", async () => {
    const answer = await rpc.other.ask_page({ method: "rpc.discover" });
    const names = answer.result.methods.map((m) => m.name);
    assert.ok(names.includes("whoami") && names.includes("multiply"));
    assert.ok(!names.includes("_secret") && !names.includes("table"));
  });

  test("the page discovers the server's methods", async () => {
    const document = await rpc.call("rpc.discover");
    assert.ok(document.methods.some((m) => m.name === "add"));
  });

  test("a server-side timeout cancels the page's handler ($/cancelRequest)", async () => {
    const cancelled = new Promise((resolve) => (seen.cancelled = resolve));
    assert.deepEqual(await rpc.other.ask_page({ method: "waitForCancel", timeout: 0.2 }), { timeout: 0.2 });
    assert.equal(await cancelled, "AbortError"); // the cancel may come just after the answer; the test's timeout bounds it
  });

  test("the server's notification at connect reached the page", async () => {
    assert.match(seen.welcome, /^fastwsrpc /);
  });

  test("a timeout rejects with RpcTimeoutError and cancels the server's handler", async () => {
    const key = `node-timeout-${Date.now()}`;
    const error = await rpc.call("slow", { seconds: 30, key }, { timeout: 100 }).catch((e) => e);
    assert.ok(error instanceof RpcTimeoutError, String(error));
    assert.equal(error.method, "slow");
    assert.equal(await rpc.other.slow_status({ key }), "cancelled");
  });

  test("an AbortSignal rejects with its reason and cancels the server's handler", async () => {
    const key = `node-abort-${Date.now()}`;
    const controller = new AbortController();
    const call = rpc.call("slow", { seconds: 30, key }, { signal: controller.signal });
    // Abort once the server runs the handler (asked through another call; no sleeping).
    assert.equal(await rpc.other.slow_status({ key, wait: 0 }), "running");
    controller.abort();
    const error = await call.catch((e) => e);
    assert.equal(error.name, "AbortError");
    assert.equal(await rpc.other.slow_status({ key }), "cancelled");
  });

  test("an already aborted signal sends nothing", async () => {
    const reason = new Error("not wanted");
    const error = await rpc.call("add", { a: 1, b: 2 }, { signal: AbortSignal.abort(reason) }).catch((e) => e);
    assert.equal(error, reason);
  });

  test("a batch answers in order, errors as objects", async () => {
    const responses = await rpc.batch([
      ["add", { a: 1, b: 2 }],
      ["subtract", [10, 4]],
      { method: "withdraw", params: { amount: 100 } },
      ["tags", undefined, true], // a notification: no response
      { method: "no_such_method" },
    ]);
    assert.equal(responses.length, 4);
    assert.equal(responses[0].result, 3);
    assert.equal(responses[1].result, 6);
    assert.equal(responses[2].error.code, -32010);
    assert.deepEqual(responses[2].error.data, { balance: 10, requested: 100 });
    assert.equal(responses[3].error.code, -32601);
  });

  test("a batch of notifications only resolves with no responses", async () => {
    assert.deepEqual(await rpc.batch([["tags", undefined, true]]), []);
  });

  test("a batch times out whole and cancels its unanswered calls", async () => {
    const key = `node-batch-${Date.now()}`;
    const batch = rpc.batch(
      [
        ["add", { a: 1, b: 1 }],
        ["slow", { seconds: 30, key }],
      ],
      { timeout: 100 },
    );
    const error = await batch.catch((e) => e);
    assert.ok(error instanceof RpcTimeoutError, String(error));
    assert.equal(await rpc.other.slow_status({ key }), "cancelled");
  });

  test("notify is never answered", async () => {
    assert.equal(await rpc.notify("tags"), undefined);
    assert.equal(await rpc.other.add({ a: 0, b: 0 }), 0); // the connection is fine after it
  });

  test("bad params are refused before sending", async () => {
    await assert.rejects(rpc.call("add", 5), TypeError);
    await assert.rejects(rpc.batch([]), TypeError);
  });
});

describe("connection lifecycle", options, () => {
  test("close() fails pending calls with RpcConnectionError; later calls fail at once", async () => {
    const rpc = await connect(URL, { WebSocket, methods: pageMethods() });
    const pending = rpc.call("slow", { seconds: 30, key: `node-close-${Date.now()}` });
    await rpc.close();
    const error = await pending.catch((e) => e);
    assert.ok(error instanceof RpcConnectionError, String(error));
    assert.match(error.message, /closed by the client/);
    assert.equal(rpc.state, "closed");
    assert.equal(rpc.connected, false);
    await assert.rejects(rpc.other.add({ a: 1, b: 2 }), RpcConnectionError);
  });

  test("events and callbacks: connect, disconnect, close", async () => {
    const seen = [];
    const rpc = await connect(URL, {
      WebSocket,
      onConnect: (client) => seen.push(["onConnect", client.connected]),
      onDisconnect: (_client, info) => seen.push(["onDisconnect", info.willReconnect]),
    });
    rpc.addEventListener("disconnect", (e) => seen.push(["disconnect", e.detail.code]));
    rpc.addEventListener("close", () => seen.push(["close"]));
    await rpc.close();
    assert.deepEqual(seen, [["onConnect", true], ["disconnect", 1000], ["onDisconnect", false], ["close"]]);
  });

  test("the jsonrpc2.0 subprotocol is offered and accepted", async () => {
    let socket;
    class Spy extends WebSocket {
      constructor(...args) {
        super(...args);
        socket = this;
      }
    }
    const rpc = await connect(URL, { WebSocket: Spy });
    assert.equal(socket.protocol, "jsonrpc2.0");
    await rpc.close();
  });

  test("a refused connection rejects with RpcConnectionError", async () => {
    const wrong = URL.replace(/\/ws$/, "/no-such-endpoint");
    await assert.rejects(connect(wrong, { WebSocket }), RpcConnectionError);
  });

  test("a URL that is not ws:// or wss:// is refused at once", async () => {
    await assert.rejects(connect("ftp://127.0.0.1/ws", { WebSocket }), SyntaxError);
    if (globalThis.WebSocket === undefined) {
      await assert.rejects(connect(URL), /pass one/); // Node 20: no global WebSocket, and none passed
    }
  });
});

describe("streams from the server", options, () => {
  let rpc;
  before(async () => {
    rpc = await connect(URL, { WebSocket, timeout: 10_000 });
  });
  after(async () => {
    await rpc.close();
  });

  test("every item arrives, in order, through a small credit window", async () => {
    const seen = [];
    for await (const tick of rpc.stream("ticks", { n: 100, key: "node-all" }, { buffer: 4 })) seen.push(tick.i);
    assert.deepEqual(seen, Array.from({ length: 100 }, (_, i) => i));
    assert.equal((await rpc.other.ticks_status({ key: "node-all" })), "finished");
  });

  test("breaking out closes the server's generator at once", async () => {
    for await (const tick of rpc.stream("ticks", { n: 1_000_000, key: "node-break" }, { buffer: 2 })) {
      if (tick.i === 3) break;
    }
    let status;
    for (let i = 0; i < 200; i++) {
      status = await rpc.other.ticks_status({ key: "node-break" });
      if (status === "closed") break;
    }
    assert.equal(status, "closed");
  });

  test("a producer's error rejects as RpcError with its code and data", async () => {
    const seen = [];
    await assert.rejects(
      (async () => {
        for await (const tick of rpc.stream("ticks", { n: 10, fail_at: 2 })) seen.push(tick.i);
      })(),
      (error) => error instanceof RpcError && error.code === -32050 && error.data.at === 2,
    );
    assert.deepEqual(seen, [0, 1]);
  });

  test("a plain method is not a stream", async () => {
    await assert.rejects(
      (async () => {
        for await (const _ of rpc.stream("add", { a: 1, b: 2 })) assert.fail("no items");
      })(),
      (error) => error instanceof RpcError && /not a stream/.test(error.message),
    );
  });
});

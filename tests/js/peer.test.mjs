// fastwsrpc.js against a scripted peer (the `ws` package's server): what a well-behaved
// fastwsrpc server does not do on demand. Reconnecting after the peer restarts on the
// same port, close codes that end reconnecting, malformed and unusual frames.
import assert from "node:assert/strict";
import { once } from "node:events";
import { describe, test } from "node:test";
import WebSocket, { WebSocketServer } from "ws";

import { CANCEL_REQUEST, RpcConnectionError, connect } from "../../fastwsrpc/js/fastwsrpc.js";

const options = { timeout: 10_000 };
const fast = { initialDelay: 10, maxDelay: 50, jitter: 0.25 };

/** A scripted peer on 127.0.0.1 (port 0: the kernel picks); `onMessage(ws, message)` answers. */
async function peer(onMessage, port = 0) {
  const server = new WebSocketServer({
    host: "127.0.0.1",
    port,
    handleProtocols: (protocols) => (protocols.has("jsonrpc2.0") ? "jsonrpc2.0" : false),
  });
  await once(server, "listening");
  const sockets = [];
  server.on("connection", (ws) => {
    sockets.push(ws);
    ws.on("message", (data) => onMessage(ws, JSON.parse(String(data))));
  });
  const url = `ws://127.0.0.1:${server.address().port}/ws`;
  const stop = async () => {
    for (const ws of sockets) ws.terminate();
    await new Promise((resolve) => server.close(resolve));
  };
  return { server, sockets, url, port: server.address().port, stop };
}

/** Answers each call with `{"echo": [method, params]}`, and counts what came. */
function echo(log = []) {
  return (ws, message) => {
    log.push(message);
    for (const m of Array.isArray(message) ? message : [message]) {
      if (m.id !== undefined && m.method !== undefined) {
        ws.send(JSON.stringify({ jsonrpc: "2.0", id: m.id, result: { echo: [m.method, m.params ?? null] } }));
      }
    }
  };
}

/** The next event of `type` on the client. */
function next(rpc, type) {
  return new Promise((resolve) => rpc.addEventListener(type, (e) => resolve(e.detail), { once: true }));
}

describe("reconnect", options, () => {
  test("after the peer restarts on the same port, the client reconnects and calls again", async () => {
    const first = await peer(echo());
    const connects = [];
    const rpc = await connect(first.url, { WebSocket, reconnect: fast, onConnect: (c) => connects.push(c.state) });
    assert.deepEqual(await rpc.other.hello(1), { echo: ["hello", [1]] });

    const lost = next(rpc, "disconnect");
    const pending = rpc.call("never_answered_before_the_restart");
    await first.stop();
    assert.equal((await lost).willReconnect, true);
    assert.ok((await pending.catch((e) => e)) instanceof RpcConnectionError); // pending calls fail at once
    assert.equal(rpc.state, "reconnecting");
    await assert.rejects(rpc.other.hello(), /not connected/); // calls while disconnected fail fast

    const back = next(rpc, "connect");
    const second = await peer(echo(), first.port); // the same port: the client's URL does not change
    assert.deepEqual(await back, { reconnected: true });
    assert.deepEqual(await rpc.other.hello({ again: true }), { echo: ["hello", { again: true }] });
    assert.deepEqual(connects, ["open", "open"]);
    await rpc.close();
    await second.stop();
  });

  test("reconnect is off by default: a lost connection closes the client", async () => {
    const p = await peer(echo());
    const rpc = await connect(p.url, { WebSocket });
    const closed = next(rpc, "close");
    await p.stop();
    await closed;
    assert.equal(rpc.state, "closed");
    await rpc.closed;
  });

  for (const code of [1008, 1011]) {
    test(`a close with ${code} (the client is wrong) is final, reconnect or not`, async () => {
      const p = await peer(echo());
      const rpc = await connect(p.url, { WebSocket, reconnect: fast });
      const lost = next(rpc, "disconnect");
      p.sockets[0].close(code, "go away");
      const detail = await lost;
      assert.deepEqual(detail, { code, reason: "go away", willReconnect: false });
      await rpc.closed;
      await p.stop();
    });
  }

  test("giving up after maxAttempts closes the client", async () => {
    const p = await peer(echo());
    const rpc = await connect(p.url, { WebSocket, reconnect: { ...fast, maxAttempts: 2 } });
    await p.stop();
    await rpc.closed;
    assert.equal(rpc.state, "closed");
  });

  test("close() during the backoff stops reconnecting", async () => {
    const p = await peer(echo());
    const rpc = await connect(p.url, { WebSocket, reconnect: { ...fast, initialDelay: 60_000 } });
    const lost = next(rpc, "disconnect");
    await p.stop();
    await lost;
    await rpc.close(); // resolves at once: the 60 s pause is cut short
    assert.equal(rpc.state, "closed");
  });

  test("with reconnect, the first connection is retried too", async () => {
    const p = await peer(echo());
    const url = p.url;
    await p.stop();
    const connecting = connect(url, { WebSocket, reconnect: { ...fast, maxAttempts: 3 } });
    await assert.rejects(connecting, RpcConnectionError); // nobody came back within 3 attempts
  });
});

describe("frames", options, () => {
  test("an unparsable frame is answered with -32700; the connection lives", async () => {
    const replies = [];
    const p = await peer((ws, m) => replies.push(m));
    const rpc = await connect(p.url, { WebSocket });
    p.sockets[0].send("{not json");
    p.sockets[0].send("[]");
    p.sockets[0].send(JSON.stringify({ jsonrpc: "2.0", id: 9, method: "x", params: 5 }));
    p.sockets[0].send(JSON.stringify({ jsonrpc: "2.0", id: 10, method: "nope" }));
    while (replies.length < 4) await once(p.sockets[0], "message");
    assert.deepEqual(
      replies.map((r) => [r.id, r.error.code]),
      [
        [null, -32700],
        [null, -32600],
        [9, -32600],
        [10, -32601],
      ],
    );
    await rpc.close();
    await p.stop();
  });

  test("answers may come in any order, in batches, or without result (read as null)", async () => {
    const p = await peer((ws, m) => {
      if (Array.isArray(m)) {
        ws.send(JSON.stringify(m.map((r) => ({ jsonrpc: "2.0", id: r.id, result: r.method })).reverse()));
      } else {
        ws.send(JSON.stringify({ jsonrpc: "2.0", id: m.id })); // fastapi-ws-rpc's answer for None
      }
    });
    const rpc = await connect(p.url, { WebSocket });
    const responses = await rpc.batch([["a"], ["b"], ["c"]]);
    assert.deepEqual(
      responses.map((r) => r.result),
      ["a", "b", "c"],
    );
    assert.equal(await rpc.other.nothing(), null);
    await rpc.close();
    await p.stop();
  });

  test("a batch from the peer is answered in one frame; notifications and unknown $/ ones are not", async () => {
    const frames = [];
    const p = await peer((ws, m) => frames.push(m));
    const rpc = await connect(p.url, { WebSocket, methods: { double: (x) => 2 * x, note() {} } });
    p.sockets[0].send(
      JSON.stringify([
        { jsonrpc: "2.0", id: "a", method: "double", params: [2] },
        { jsonrpc: "2.0", method: "note", params: { text: "hi" } },
        { jsonrpc: "2.0", method: "$/meta", params: { id: 1, meta: {} } },
        { jsonrpc: "2.0", id: "b", method: "double", params: [5] },
      ]),
    );
    await once(p.sockets[0], "message");
    assert.deepEqual(frames, [
      [
        { jsonrpc: "2.0", id: "a", result: 4 },
        { jsonrpc: "2.0", id: "b", result: 10 },
      ],
    ]);
    await rpc.close();
    await p.stop();
  });

  test("an error that answers no call is an `error` event", async () => {
    const p = await peer(() => {});
    const rpc = await connect(p.url, { WebSocket });
    const error = next(rpc, "error");
    p.sockets[0].send(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32600, message: "batch too big" } }));
    const detail = await error;
    assert.equal(detail.error.code, -32600);
    await rpc.close();
    await p.stop();
  });

  test("a timed-out call sends $/cancelRequest with its id; its late answer is dropped", async () => {
    const log = [];
    let late;
    const p = await peer((ws, m) => {
      log.push(m);
      if (m.method === CANCEL_REQUEST) ws.send(JSON.stringify({ jsonrpc: "2.0", id: m.params.id, result: "late" }));
      else if (m.method === "slow") late = m.id;
      else ws.send(JSON.stringify({ jsonrpc: "2.0", id: m.id, result: "ok" }));
    });
    const rpc = await connect(p.url, { WebSocket });
    await assert.rejects(rpc.call("slow", undefined, { timeout: 20 }), { name: "RpcTimeoutError" });
    assert.equal(await rpc.call("after"), "ok"); // the late "late" was not taken for this answer
    assert.deepEqual(log[1], { jsonrpc: "2.0", method: CANCEL_REQUEST, params: { id: late } });
    await rpc.close();
    await p.stop();
  });

  test("stream items nobody consumes are stopped ($/stream.cancel)", async () => {
    const log = [];
    const p = await peer((ws, m) => log.push(m));
    const rpc = await connect(p.url, { WebSocket });
    p.sockets[0].send(JSON.stringify({ jsonrpc: "2.0", method: "$/stream.item", params: { stream: 7, item: 1 } }));
    await once(p.sockets[0], "message");
    assert.deepEqual(log, [{ jsonrpc: "2.0", method: "$/stream.cancel", params: { stream: 7 } }]);
    await rpc.close();
    await p.stop();
  });
});

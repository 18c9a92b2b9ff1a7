// fastwsrpc.js against a scripted peer (the `ws` package's server): what a well-behaved
// fastwsrpc server does not do on demand. Reconnecting after the peer restarts on the
// same port, close codes that end reconnecting, a list of URLs and a drain (1012),
// sessions and idempotent calls on the wire, malformed and unusual frames.
import assert from "node:assert/strict";
import { once } from "node:events";
import { describe, test } from "node:test";
import WebSocket, { WebSocketServer } from "ws";

import { CANCEL_REQUEST, RpcConnectionError, SESSION_NOTICE, connect } from "../../fastwsrpc/js/fastwsrpc.js";

const options = { timeout: 10_000 };
const fast = { initialDelay: 10, maxDelay: 50, jitter: 0.25 };

/**
 * A scripted peer on 127.0.0.1 (port 0: the kernel picks); `onMessage(ws, message)` answers,
 * `onConnection(ws, request)` runs first on each connection; `paths` are the paths asked for.
 */
async function peer(onMessage, port = 0, onConnection = () => {}) {
  const server = new WebSocketServer({
    host: "127.0.0.1",
    port,
    handleProtocols: (protocols) => (protocols.has("jsonrpc2.0") ? "jsonrpc2.0" : false),
  });
  await once(server, "listening");
  const sockets = [];
  const paths = [];
  server.on("connection", (ws, request) => {
    sockets.push(ws);
    paths.push(request.url);
    ws.on("message", (data) => onMessage(ws, JSON.parse(String(data))));
    onConnection(ws, request);
  });
  const url = `ws://127.0.0.1:${server.address().port}/ws`;
  const stop = async () => {
    for (const ws of sockets) ws.terminate();
    await new Promise((resolve) => server.close(resolve));
  };
  return { server, sockets, paths, url, port: server.address().port, stop };
}

/** On each connection, the `$/session` a fastwsrpc server sends first: `id`, resumed when the client presented it. */
function giveSession(id) {
  return (ws, request) => {
    const asked = new URL(request.url, "ws://x").searchParams.get("fastwsrpc_session");
    const params = { id, resumed: asked === id, ttl: 120 };
    ws.send(JSON.stringify({ jsonrpc: "2.0", method: SESSION_NOTICE, params }));
  };
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

describe("several URLs, sessions, idempotent calls", options, () => {
  test("a drain (1012) moves the client to the next URL, which it asks to resume its session", async () => {
    const a = await peer(echo(), 0, giveSession("s-1"));
    const b = await peer(echo(), 0, giveSession("s-1"));
    const rpc = await connect([a.url, b.url], { WebSocket, reconnect: fast });
    assert.deepEqual(rpc.urls, [a.url, b.url]);
    // The server's first message may be read before connect() resolves: then it is already in rpc.session.
    assert.deepEqual(rpc.session ?? (await next(rpc, "session")), { id: "s-1", resumed: false, ttl: 120 });
    assert.deepEqual(a.paths, ["/ws?fastwsrpc_session=new"]);

    const resumed = next(rpc, "session");
    a.sockets[0].close(1012, "draining");
    assert.deepEqual(await resumed, { id: "s-1", resumed: true, ttl: 120 });
    assert.equal(rpc.url, b.url);
    assert.deepEqual(b.paths, ["/ws?fastwsrpc_session=s-1"]);
    assert.deepEqual(rpc.session, { id: "s-1", resumed: true, ttl: 120 });
    assert.deepEqual(await rpc.other.hello(), { echo: ["hello", null] });
    await rpc.close();
    await a.stop();
    await b.stop();
  });

  test("a failed attempt tries the next URL; without reconnect no session is asked for", async () => {
    const down = await peer(echo());
    const downUrl = down.url;
    await down.stop();
    const up = await peer(echo());
    const rpc = await connect([downUrl, up.url], { WebSocket, reconnect: fast });
    assert.equal(rpc.url, up.url);
    await rpc.close();
    const plain = await connect(up.url, { WebSocket });
    assert.equal(up.paths.at(-1), "/ws"); // nothing added to the URL
    await plain.close();
    await up.stop();
  });

  test("an idempotent call is sent again under the same id after a reconnect; others fail", async () => {
    const first = []; // what reached the first node: it answers nothing, then dies
    const a = await peer((ws, m) => first.push(m));
    const b = await peer(echo());
    const rpc = await connect([a.url, b.url], { WebSocket, reconnect: fast, idempotentMethods: ["charge"] });
    const kept = rpc.call("charge", { order: 42 });
    const explicit = rpc.call("refund", [7], { idempotent: true });
    const plain = rpc.call("charge", { order: 43 }, { idempotent: false }).catch((e) => e);
    while (first.length < 3) await once(a.sockets[0], "message");
    assert.deepEqual(
      first.map((m) => m.id),
      ["idem-1", "idem-2", 1],
    );
    await a.stop();
    assert.ok((await plain) instanceof RpcConnectionError);
    assert.deepEqual(await kept, { echo: ["charge", { order: 42 }] });
    assert.deepEqual(await explicit, { echo: ["refund", [7]] });
    await rpc.close();
    await b.stop();
  });

  test("idempotent calls waiting for a reconnect fail once it gives up", async () => {
    const p = await peer(() => {});
    const rpc = await connect(p.url, { WebSocket, reconnect: { ...fast, maxAttempts: 2 } });
    const call = rpc.call("charge", undefined, { idempotent: true }).catch((e) => e);
    await once(p.sockets[0], "message");
    await p.stop();
    const error = await call;
    assert.ok(error instanceof RpcConnectionError, String(error));
    assert.equal(rpc.state, "closed");
  });
});

/** A scripted `$/subscribe`: answers the stream, then sends `items(params, n)` (n: the how-many'th subscribe). */
function topics(log, items) {
  return (ws, m) => {
    if (m.method !== "$/subscribe") return;
    log.push(m.params);
    ws.send(JSON.stringify({ jsonrpc: "2.0", id: m.id, result: { stream: m.id } }));
    for (const item of items(m.params, log.length)) {
      const frame = item.end
        ? { jsonrpc: "2.0", method: "$/stream.end", params: { stream: m.id, error: item.end } }
        : { jsonrpc: "2.0", method: "$/stream.item", params: { stream: m.id, item } };
      ws.send(JSON.stringify(frame));
    }
  };
}

describe("subscriptions across reconnects", options, () => {
  test("since is sent ({} first); a lost history after a reconnect is told, not hidden", async () => {
    const asked = [];
    const a = await peer(
      topics(asked, () => [
        { topic: "t", recovered: false, reason: "new", epoch: "e1", offset: 0, missed: 0 }, // not delivered
        { topic: "u", recovered: false, reason: "new", epoch: null, offset: 0, missed: 0 },
        { topic: "t", data: "one", dropped: 0, epoch: "e1", offset: 1 },
      ]),
    );
    const b = await peer(
      topics(asked, () => [
        { topic: "t", recovered: false, reason: "epoch", epoch: "e2", offset: 5, missed: 0 },
        { topic: "u", recovered: true, epoch: "e9", offset: 0, missed: 0 },
        { topic: "t", data: "six", dropped: 0, epoch: "e2", offset: 6 },
      ]),
    );
    const rpc = await connect([a.url, b.url], { WebSocket, reconnect: fast });
    const subscription = rpc.subscribe(["t", "u"]);
    assert.equal((await subscription.next()).value.data, "one");
    assert.deepEqual({ ...subscription.positions }, { t: { epoch: "e1", offset: 1 }, u: { epoch: null, offset: 0 } });
    assert.equal(subscription.recovered, null);

    a.sockets[0].close(1012, "draining");
    const notice = (await subscription.next()).value;
    assert.deepEqual(notice, { topic: "t", recovered: false, reason: "epoch", epoch: "e2", offset: 5, missed: 0 });
    assert.equal(subscription.recovered, false);
    assert.equal((await subscription.next()).value.data, "six");
    assert.deepEqual(asked, [
      { topics: ["t", "u"], since: {} },
      { topics: ["t", "u"], since: { t: { epoch: "e1", offset: 1 }, u: { epoch: null, offset: 0 } } },
    ]);
    assert.equal(subscription.resubscribes, 1);

    const cancelled = once(b.sockets[0], "message");
    await subscription.close();
    assert.deepEqual(JSON.parse(String((await cancelled)[0])), {
      jsonrpc: "2.0",
      method: "$/stream.cancel",
      params: { stream: 2 },
    });
    assert.deepEqual(await subscription.next(), { value: undefined, done: true });
    await rpc.close();
    await a.stop();
    await b.stop();
  });

  test("a history the server cannot read now (-32002): subscribes again from the same position", async () => {
    const asked = [];
    const p = await peer(
      topics(asked, (params, n) =>
        n === 1
          ? [{ end: { code: -32002, message: "history unavailable", data: { topic: "t" } } }]
          : [{ topic: "t", data: "back", dropped: 0, epoch: "e1", offset: 4 }],
      ),
    );
    const rpc = await connect(p.url, { WebSocket, reconnect: fast });
    const subscription = rpc.subscribe("t", { since: { t: ["e1", 3] }, onSlow: "drop_oldest" });
    assert.equal((await subscription.next()).value.data, "back");
    assert.deepEqual(asked, [
      { topics: ["t"], since: { t: { epoch: "e1", offset: 3 } }, on_slow: "drop_oldest" },
      { topics: ["t"], since: { t: { epoch: "e1", offset: 3 } }, on_slow: "drop_oldest" },
    ]);
    await subscription.close();
    await rpc.close();
    await p.stop();
  });

  test("a position given to the first subscription counts: a gap after it is told", async () => {
    const p = await peer(
      topics([], () => [
        { topic: "t", recovered: false, reason: "gap", epoch: "e1", offset: 90, missed: 0 },
        { topic: "t", data: "next", dropped: 0, epoch: "e1", offset: 91 },
      ]),
    );
    const rpc = await connect(p.url, { WebSocket });
    const subscription = rpc.subscribe("t", { since: { t: { epoch: "e1", offset: 2 } } });
    assert.equal((await subscription.next()).value.reason, "gap");
    assert.equal(subscription.recovered, false);
    assert.equal((await subscription.next()).value.data, "next");
    await subscription.close();
    await rpc.close();
    await p.stop();
  });

  test("without reconnect, a lost connection ends the subscription with RpcConnectionError", async () => {
    const p = await peer(topics([], () => []));
    const rpc = await connect(p.url, { WebSocket });
    const subscription = rpc.subscribe("t");
    await subscription.open();
    const next = subscription.next();
    p.sockets[0].terminate();
    await assert.rejects(next, RpcConnectionError);
    await p.stop();
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

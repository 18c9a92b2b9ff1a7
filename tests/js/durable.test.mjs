// fastwsrpc.js across dropped connections, against a real fastwsrpc server (tests/durable_js_app.py):
// sessions, idempotent calls answered once, subscriptions that recover what was published meanwhile.
//
// tests/test_node_client.py starts the server and passes its URL in
// FASTWSRPC_DURABLE_URL. The client under test connects through a TCP proxy of
// its own that the test cuts (the connection dies under the client) or stalls
// (the client is kept away); the test drives the proxy and the server through
// a second, direct connection (`control`). Nothing sleeps: every wait is for an
// event or an answer, bounded by the test's timeout.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";

import { RpcConnectionError, connect } from "../../fastwsrpc/js/fastwsrpc.js";

const DIRECT = process.env.FASTWSRPC_DURABLE_URL;
if (!DIRECT) throw new Error("FASTWSRPC_DURABLE_URL is not set: run this through tests/test_node_client.py");

const bounded = { timeout: 20_000 };
const fast = { initialDelay: 10, maxDelay: 100 };
/** The server's topic history (tests/durable_js_app.py's HISTORY). */
const HISTORY = 100;

let control;
let serial = 0;
const unique = (what) => `node-${what}-${process.pid}-${++serial}`;

/** A proxy of our own to the server: `url` to connect to; `stall()`, `pass()`, `cut()` act on it. */
async function newLink() {
  const port = await control.other.proxy();
  return {
    url: `ws://127.0.0.1:${port}/ws`,
    cut: () => control.other.link({ port, mode: "pass", cut: true }),
    stallAndCut: () => control.other.link({ port, mode: "stall", cut: true }),
    pass: () => control.other.link({ port, mode: "pass" }),
    close: () => control.other.close_proxy({ port }),
  };
}

/** The next event of `type` on the client. */
function next(rpc, type) {
  return new Promise((resolve) => rpc.addEventListener(type, (e) => resolve(e.detail), { once: true }));
}

/** The session the server gave on this connection (its `$/session` may come just after the open). */
async function sessionOf(rpc) {
  return rpc.session ?? (await next(rpc, "session"));
}

/** A WebSocket class that records every frame both ways (parsed), to count what went over the wire. */
function spying(frames) {
  return class Spy extends WebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => frames.push(["in", JSON.parse(String(event.data))]));
    }

    send(data, ...rest) {
      frames.push(["out", JSON.parse(String(data))]);
      return super.send(data, ...rest);
    }
  };
}

describe("durable: sessions, idempotent calls, topic recovery", () => {
  before(async () => {
    control = await connect(DIRECT, { WebSocket, timeout: 20_000 });
  });
  after(() => control.close());

  test("an idempotent call running when the link was cut is answered once, and ran once", bounded, async () => {
    const link = await newLink();
    const frames = [];
    const rpc = await connect(link.url, { WebSocket: spying(frames), reconnect: fast, timeout: 20_000 });
    try {
      const first = await sessionOf(rpc);
      assert.equal(first.resumed, false);
      assert.equal(typeof first.id, "string");

      const key = unique("idem");
      const kept = rpc.call("gated", { key, value: 5 }, { idempotent: true });
      const lost = rpc.call("gated", { key: `${key}-plain`, value: 6 }).catch((e) => e); // an ordinary call
      await control.other.wait_started({ key });
      await control.other.wait_started({ key: `${key}-plain` });
      const resumed = next(rpc, "session");
      await link.cut(); // the link dies under both calls, while the server runs them

      const error = await lost;
      assert.ok(error instanceof RpcConnectionError, String(error)); // an ordinary call in flight fails, as always
      assert.deepEqual(await resumed, { id: first.id, resumed: true, ttl: first.ttl });
      // A round trip first: the repeat (the first frame on the new connection) is then known to the
      // server, which will answer it from the run still going. (Had the run ended before the server
      // read the repeat, it would answer both, the run's answer and the repeat's; the client drops the second.)
      assert.equal(await rpc.other.runs({ key }), 1);
      await control.other.open_gate({ key });
      assert.equal(await kept, 5);

      // A round trip after the answer: a second answer to the call would have come before it.
      assert.equal(await rpc.other.runs({ key }), 1); // ran once, though it was sent twice
      const requests = frames.filter(([way, f]) => way === "out" && f.method === "gated" && f.params.key === key);
      assert.equal(requests.length, 2);
      assert.match(requests[0][1].id, /^idem-\d+$/);
      assert.equal(requests[1][1].id, requests[0][1].id); // the same id on the new connection
      const answers = frames.filter(([way, f]) => way === "in" && f.id === requests[0][1].id);
      assert.deepEqual(
        answers.map(([, f]) => f.result),
        [5],
      );
      await control.other.open_gate({ key: `${key}-plain` });
    } finally {
      await rpc.close();
      await link.close();
    }
  });

  test("idempotentMethods by name, through rpc.other; one made while reconnecting waits for the connection", bounded, async () => {
    const link = await newLink();
    const rpc = await connect(link.url, { WebSocket, reconnect: fast, idempotentMethods: ["gated"] });
    try {
      await sessionOf(rpc);
      const key = unique("by-name");
      const call = rpc.other.gated({ key, value: "first" });
      await control.other.wait_started({ key });
      const lost = next(rpc, "disconnect");
      await link.stallAndCut(); // the client cannot come back until pass()
      assert.equal((await lost).willReconnect, true);
      assert.equal(rpc.state, "reconnecting");

      const later = unique("while-away");
      await control.other.open_gate({ key: later });
      const waiting = rpc.other.gated({ key: later, value: "later" }); // made while away: waits, is not refused
      await assert.rejects(rpc.call("runs", { key }), RpcConnectionError); // an ordinary one fails fast
      await control.other.open_gate({ key });
      await link.pass();
      assert.equal(await call, "first");
      assert.equal(await waiting, "later");
      assert.equal(await rpc.other.runs({ key }), 1);
      assert.equal(await rpc.other.runs({ key: later }), 1);
      assert.equal(rpc.session.resumed, true);
    } finally {
      await rpc.close();
      await link.close();
    }
  });

  test("a subscription recovers what was published while the client was away, in order", bounded, async () => {
    const link = await newLink();
    const rpc = await connect(link.url, { WebSocket, reconnect: fast, timeout: 20_000 });
    try {
      const topic = unique("news");
      const subscription = rpc.subscribe(topic);
      await subscription.open();
      await control.other.publish_many({ topic, start: 0, count: 5 });
      const seen = [];
      for (let i = 0; i < 5; i++) seen.push((await subscription.next()).value.data);
      assert.equal(subscription.positions[topic].offset, 5);
      assert.equal(subscription.recovered, null); // the first subscription's notice is not delivered

      await link.stallAndCut(); // a partition: the client is away
      await control.other.publish_many({ topic, start: 5, count: 10 }); // published while it is away
      await link.pass();
      while (seen.length < 20) {
        const { value, done } = await subscription.next();
        assert.equal(done, false);
        assert.equal(value.recovered, undefined, JSON.stringify(value)); // events only: nothing was lost
        seen.push(value.data);
        if (seen.length === 15) await control.other.publish_many({ topic, start: 15, count: 5 }); // and live ones
      }
      assert.deepEqual(
        seen,
        Array.from({ length: 20 }, (_, i) => i),
      ); // in order, none twice, none missing
      assert.equal(subscription.recovered, true);
      assert.equal(subscription.resubscribes, 1);
      await subscription.close();
    } finally {
      await rpc.close();
      await link.close();
    }
  });

  test("a gap longer than the history is told, not hidden", bounded, async () => {
    const link = await newLink();
    const rpc = await connect(link.url, { WebSocket, reconnect: fast, timeout: 20_000 });
    try {
      const topic = unique("gap");
      const subscription = rpc.subscribe(topic);
      await subscription.open();
      await control.other.publish({ topic, data: "before" });
      const seen = [];
      for await (const event of subscription) {
        seen.push(event);
        if (seen.length === 1) {
          assert.equal(event.data, "before");
          await link.stallAndCut();
          await control.other.publish_many({ topic, start: 0, count: HISTORY + 10 }); // more than the history keeps
          await link.pass();
        } else if (seen.length === 2) {
          assert.equal(subscription.recovered, false);
          await control.other.publish({ topic, data: "after" });
        } else break; // leaving the loop closes the subscription
      }
      const [, notice, after] = seen;
      assert.equal(notice.topic, topic);
      assert.equal(notice.recovered, false);
      assert.equal(notice.reason, "gap");
      assert.equal(after.data, "after"); // and it goes on from there
      assert.equal(after.offset, notice.offset + 1);
    } finally {
      await rpc.close();
      await link.close();
    }
  });
});

// fastwsrpc.js: the browser (and Node) client of fastwsrpc.
//
// Bidirectional JSON-RPC 2.0 over one WebSocket: the page calls the server's
// methods through `rpc.other`, and the server calls the page's `methods`, at
// any time, also while a call of the page is waiting for its answer. One ES
// module, no dependencies, plain standard JSON-RPC 2.0 text frames on the wire:
//
//   import { connect, RpcError } from "/fastwsrpc.js";
//   const rpc = await connect("ws://host/ws", { methods: { whoami: () => "browser" } });
//   await rpc.other.add({ a: 1, b: 2 });      // named params: one plain object
//   await rpc.other.subtract(10, 4);          // positional params: anything else
//
// Times are in milliseconds, as everywhere in JavaScript (the Python client
// counts seconds). The conventions beyond JSON-RPC 2.0 itself are the ones the
// Python side uses: cancellation is the notification `$/cancelRequest`
// `{"id": <id>}` (LSP's), the `jsonrpc2.0` subprotocol is offered, and
// `rpc.discover` answers an OpenRPC document. With `reconnect`, nothing is lost
// across a reconnect: the client asks for a session (`?fastwsrpc_session=`, the
// server's first message `$/session`), idempotent calls (ids `idem-<n>`) are
// sent again and run once, and `rpc.subscribe()` recovers what was published
// meanwhile from the server's topic history (docs/guide/sessions.md and
// docs/guide/recovery.md are the wire spec):
//
//   const rpc = await connect(["wss://a.example/ws", "wss://b.example/ws"], { reconnect: true });
//   await rpc.call("charge", { order: 42 }, { idempotent: true });
//   for await (const event of rpc.subscribe("prices.btc")) show(event.data);

/** The error codes JSON-RPC 2.0 reserves; a method may throw `new RpcError(ErrorCodes.INVALID_PARAMS, ...)`. */
export const ErrorCodes = Object.freeze({
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  INTERNAL_ERROR: -32603,
});

/** The notification that tells the other side we gave up on a call (LSP's convention, as the Python side). */
export const CANCEL_REQUEST = "$/cancelRequest";

/** The WebSocket subprotocol offered by default; the server accepts it when offered. */
export const SUBPROTOCOL = "jsonrpc2.0";
/** Streams: items, the end, credits and cancel travel as these notifications (see the README's wire table). */
export const STREAM_ITEM = "$/stream.item";
export const STREAM_END = "$/stream.end";
export const STREAM_CREDIT = "$/stream.credit";
export const STREAM_CANCEL = "$/stream.cancel";
/** Items a stream consumer buffers by default (its window of credits), as in Python. */
export const DEFAULT_STREAM_BUFFER = 64;
/** Items a producer may send before our window reaches it (so that many may wait here whatever the buffer). */
const INITIAL_CREDITS = 16;

/** Topics: subscribing is this stream method (docs/guide/recovery.md is the wire spec). */
export const SUBSCRIBE = "$/subscribe";
/** A subscription stream ends with this error code when the server cannot read the history now: try again later. */
export const HISTORY_UNAVAILABLE = -32002;
/**
 * Sessions (docs/guide/sessions.md): a browser cannot set handshake headers,
 * so the client asks for one in this query parameter (`new`, or the id it
 * had), and the server answers with a first message, the notification
 * `$/session` `{"id", "resumed", "ttl"}`.
 */
export const SESSION_QUERY = "fastwsrpc_session";
export const SESSION_NOTICE = "$/session";
/** Ids of idempotent calls start with this (`idem-1`, `idem-2`, ... for the client's life): the server runs each once. */
export const IDEMPOTENT_PREFIX = "idem-";
/** Marks, inside `_consume`, that a stream is open (never yielded to a page). */
const OPENED = Symbol("opened");

/**
 * Close codes after which reconnecting cannot help: they say this client is
 * wrong (protocol error, unacceptable data, policy violation, server error),
 * so, as the Python client, we do not come back.
 */
const FINAL_CLOSE_CODES = new Set([1002, 1003, 1007, 1008, 1011]);

/**
 * Reconnect settings used by `reconnect: true`; `reconnect: {...}` overrides any
 * of them. Reconnecting is off unless asked, as in the Python client: what a
 * lost connection means for a page's state is the page's decision, and a page
 * that wants it says `reconnect: true`. With it the client asks the server for
 * a session: idempotent calls in flight are sent again after a reconnect (and
 * run once), and `rpc.subscribe()` subscriptions go on from where they were.
 */
export const RECONNECT_DEFAULTS = Object.freeze({
  initialDelay: 500, // ms: the first attempt after a loss comes within this
  maxDelay: 30000, // the delay doubles (factor) up to this
  factor: 2,
  // "full": each wait is a random time between 0 and the delay (full jitter), so
  // that the pages of a drained or restarted server do not all come back in the
  // same second; a number (0.25) stretches each delay by a random 0-25% instead.
  jitter: "full",
  maxAttempts: Infinity, // attempts in a row before giving up (the state becomes "closed")
});

const OPEN = 1; // WebSocket.OPEN, the same number in browsers and in the `ws` package

// ------------------------------------------------------------------- errors

/**
 * The other side answered with a JSON-RPC error; or, thrown by one of the
 * page's methods, the error to answer with (its code, message and data are sent).
 */
export class RpcError extends Error {
  constructor(code, message, data, response) {
    super(message);
    this.name = "RpcError";
    this.code = code;
    if (data !== undefined) this.data = data;
    // The response it came in: set only on errors the other side sent us, so that
    // a handler that lets one escape is told apart from one that throws its own.
    if (response !== undefined) this.response = response;
  }

  toJSON() {
    const error = { code: this.code, message: this.message };
    if (this.data !== undefined) error.data = this.data;
    return error;
  }
}

/** No answer came within the call's `timeout` (ms); the other side was told to cancel the call. */
export class RpcTimeoutError extends Error {
  constructor(method, timeout) {
    super(`no answer to '${method}' within ${timeout} ms`);
    this.name = "RpcTimeoutError";
    this.method = method;
    this.timeout = timeout;
  }
}

/**
 * The connection is not there: it could not be made, it was lost before the
 * answer came, or the client is disconnected or closed. Calls made while
 * disconnected fail at once with it rather than wait: queueing them would hide
 * an outage behind growing latency (the Python client does the same).
 */
export class RpcConnectionError extends Error {
  constructor(message, closeCode, closeReason) {
    super(message);
    this.name = "RpcConnectionError";
    if (closeCode !== undefined) this.closeCode = closeCode;
    if (closeReason) this.closeReason = closeReason;
  }
}

// ------------------------------------------------------------------ helpers

function isPlainObject(value) {
  if (value === null || typeof value !== "object") return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** `rpc.other.add({a: 1})` sends named params, `rpc.other.add(1, 2)` positional ones, `rpc.other.f()` none. */
function paramsOf(args) {
  if (args.length === 0) return undefined;
  if (args.length === 1 && isPlainObject(args[0])) return args[0];
  return args;
}

function checkCall(method, params) {
  if (typeof method !== "string") throw new TypeError(`a method name is a string, not ${typeof method}`);
  if (params !== undefined && params !== null && typeof params !== "object") {
    throw new TypeError(`JSON-RPC params are an object (named) or an array (positional), not ${typeof params}`);
  }
}

function request(id, method, params) {
  return params === undefined || params === null
    ? { jsonrpc: "2.0", id, method }
    : { jsonrpc: "2.0", id, method, params };
}

function notification(method, params) {
  return params === undefined || params === null ? { jsonrpc: "2.0", method } : { jsonrpc: "2.0", method, params };
}

function errorResponse(id, code, message, data) {
  const error = { code, message };
  if (data !== undefined) error.data = data;
  return { jsonrpc: "2.0", id, error };
}

/** An answer as text; one that JSON cannot hold (a BigInt, a cycle) becomes -32603, as on the Python side. */
function encodeAnswer(answer) {
  try {
    return JSON.stringify(answer);
  } catch {
    const message = "Internal error: result could not be encoded as JSON";
    return JSON.stringify(errorResponse(answer.id, ErrorCodes.INTERNAL_ERROR, message));
  }
}

/**
 * The URL to open: `ws:` or `wss:`; in a page, a relative one ("/ws") is
 * resolved against the page's address, `http(s):` becoming `ws(s):`. Checked
 * once, here, so that a wrong URL fails at once rather than in every retry.
 */
function resolveUrl(url) {
  const resolved = new URL(String(url), globalThis.location?.href);
  if (resolved.protocol === "http:") resolved.protocol = "ws:";
  else if (resolved.protocol === "https:") resolved.protocol = "wss:";
  if (resolved.protocol !== "ws:" && resolved.protocol !== "wss:") {
    throw new SyntaxError(`a fastwsrpc URL is ws:// or wss://, not ${resolved.protocol}// (${url})`);
  }
  return resolved.href;
}

function abortError(message) {
  return new DOMException(message, "AbortError");
}

function jittered(delay, jitter) {
  return jitter === "full" ? Math.random() * delay : delay * (1 + Math.random() * jitter);
}

// ------------------------------------------------------------------- client

/**
 * Connect to a fastwsrpc endpoint; resolves once the connection is open (and
 * `onConnect` has run), with the client. `url` may be a list of URLs (the
 * nodes of one service): a connection goes to the first, and each failed
 * attempt or lost connection (a drain's 1012 included) moves on to the next.
 *
 * Options: `methods` (the page's methods the server may call), `WebSocket`
 * (the class to use: Node 20 passes the `ws` package's), `timeout` (default
 * per-call timeout, ms; none when absent), `reconnect` (false by default;
 * `true` or settings, see RECONNECT_DEFAULTS), `session` (ask the server for a
 * session; default: when `reconnect` is on), `idempotentMethods` (names whose
 * calls are idempotent by default, see `call`), `protocols` (default
 * `["jsonrpc2.0"]`), `onConnect(rpc)` and `onDisconnect(rpc, {code, reason,
 * willReconnect})`.
 */
export async function connect(url, options = {}) {
  const client = new RpcClient(url, options);
  await client._establish(false);
  return client;
}

/**
 * One client and its connection (the one after the other, if it reconnects).
 *
 * Events (an EventTarget; each event's `detail` says more): `connect`
 * ({reconnected}), `disconnect` ({code, reason, willReconnect}), `close` (final:
 * no more reconnects), `session` ({id, resumed, ttl}: the server's `$/session`
 * on a connection that asked for one), `error` ({error, method}: a page method
 * threw something other than an RpcError, an onConnect/onDisconnect callback
 * failed, or the server sent an error that answers no call of ours).
 */
export class RpcClient extends EventTarget {
  constructor(url, options = {}) {
    super();
    const {
      methods = {},
      WebSocket: Socket = globalThis.WebSocket,
      timeout,
      reconnect = false,
      session,
      idempotentMethods = [],
      protocols = [SUBPROTOCOL],
      onConnect,
      onDisconnect,
    } = options;
    if (typeof Socket !== "function") {
      throw new TypeError(
        "no WebSocket class: this runtime has no global WebSocket (Node 20); " +
          "pass one, e.g. connect(url, {WebSocket}) with `import WebSocket from \"ws\"`",
      );
    }
    const urls = Array.isArray(url) ? url.map(resolveUrl) : [resolveUrl(url)];
    if (urls.length === 0) throw new TypeError("connect() needs a URL (or a list of them, tried in turn)");
    /** The URLs connections go to, in turn: a reconnect goes to the next one (another node of the service). */
    this.urls = urls;
    /** The URL of the current (or next) connection. */
    this.url = urls[0];
    this._urlIndex = 0;
    this.methods = methods;
    this.timeout = timeout;
    /** Methods whose calls are idempotent unless the call says otherwise: re-sent after a reconnect, run once. */
    this.idempotentMethods = new Set(idempotentMethods);
    this._Socket = Socket;
    this._protocols = protocols;
    this._reconnect = reconnect ? { ...RECONNECT_DEFAULTS, ...(reconnect === true ? {} : reconnect) } : null;
    this._useSession = session ?? this._reconnect !== null;
    this._sessionId = null; // the id to present when reconnecting (the last the server gave)
    /** What the server said of our session on the last connection that asked: {id, resumed, ttl}, or null. */
    this.session = null;
    this._idempotentCount = 0; // idem-1, idem-2, ...: unique for the client's life, as the session needs
    this._onConnect = onConnect;
    this._onDisconnect = onDisconnect;
    this._ws = null;
    this._state = "connecting";
    this._closing = false; // close() was called: no reconnect, whatever happens
    this._finished = false; // the "close" event was sent and `closed` resolved
    this._nextId = 1;
    this._pending = new Map(); // our calls waiting for answers: id -> {settle(response), fail(error)}
    this._incoming = new Map(); // the server's calls our methods are handling: id -> AbortController
    this._streams = new Map(); // streams we consume: id -> {items, ended, error, wake}
    this._wakeUp = null; // ends the pause between reconnect attempts (close() calls it)
    this._closed = new Promise((resolve) => (this._resolveClosed = resolve));

    // `rpc.other.name(...)` calls `name` on the server. `then` is never a remote
    // method, so that awaiting `rpc.other` (or returning it from an async
    // function) does not call the server; use `rpc.call("then")` for that name.
    const client = this;
    const proxies = new Map();
    this.other = new Proxy(Object.create(null), {
      get(_target, name) {
        if (typeof name !== "string" || name === "then") return undefined;
        let proxy = proxies.get(name);
        if (proxy === undefined) {
          proxy = (...args) => client.call(name, paramsOf(args));
          proxies.set(name, proxy);
        }
        return proxy;
      },
    });
  }

  /** "connecting", "open", "reconnecting" or "closed" (final). */
  get state() {
    return this._state;
  }

  /** Whether calls can be made now. */
  get connected() {
    return this._ws !== null && this._ws.readyState === OPEN;
  }

  /** Resolves once the client is closed for good (by close(), a final close code, or reconnects given up). */
  get closed() {
    return this._closed;
  }

  // -------------------------------------------------------------- calling

  /**
   * Call `method` on the server with `params` (object: named, array:
   * positional, undefined: none); resolves with its result. Rejects with
   * RpcError (the server's error), RpcTimeoutError, RpcConnectionError, or the
   * signal's reason when `signal` aborts. A timed-out or aborted call is
   * cancelled on the server too (`$/cancelRequest`).
   *
   * `idempotent: true` (or `method` in `idempotentMethods`): safe to run twice,
   * so if the connection drops before the answer arrives, the call is sent
   * again on the next connection (with `reconnect`), under the same id
   * (`idem-<n>`); with a session the server runs it once and answers the
   * repeat from its record. One made while reconnecting waits for the
   * connection. `timeout` covers the whole, reconnects included. Other calls in
   * flight reject with RpcConnectionError when the connection drops.
   */
  call(method, params, { timeout = this.timeout, signal, idempotent } = {}) {
    return new Promise((resolve, reject) => {
      checkCall(method, params);
      if (signal?.aborted) throw signal.reason ?? abortError("aborted");
      const durable = idempotent ?? this.idempotentMethods.has(method);
      if (!(durable && this._state === "reconnecting")) this._checkConnected(method);
      const id = durable ? `${IDEMPOTENT_PREFIX}${++this._idempotentCount}` : this._nextId++;
      const text = JSON.stringify(request(id, method, params));
      let timer;
      const cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      const giveUp = (error) => {
        if (!this._pending.delete(id)) return; // answered (or failed) meanwhile
        cleanup();
        this._cancelRemote(id);
        reject(error);
      };
      const onAbort = () => giveUp(signal.reason ?? abortError("aborted"));
      this._pending.set(id, {
        settle: (response) => {
          cleanup();
          if (response.error !== undefined && response.error !== null) reject(remoteError(response));
          else resolve(response.result === undefined ? null : response.result);
        },
        fail: (error) => {
          cleanup();
          reject(error);
        },
        // An idempotent call's frame: sent again by _establish on each new connection until answered.
        resend: durable ? text : undefined,
      });
      try {
        // An idempotent one is sent now only on an established connection; else _establish sends it.
        if (!durable || (this._state === "open" && this.connected)) this._sendText(text);
      } catch (error) {
        this._pending.delete(id);
        throw error;
      }
      if (timeout > 0 && timeout !== Infinity) timer = setTimeout(giveUp, timeout, new RpcTimeoutError(method, timeout));
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /**
   * Consume the server's stream method `method` (an async generator there):
   * `for await (const item of rpc.stream("ticks", {n: 5})) ...`. Flow control
   * by credit: at most `buffer` items wait here, and the server's generator is
   * not advanced past the credits we grant, so a page that stops reading stops
   * the producer. Breaking out of the loop (or `signal` aborting) cancels the
   * stream on the server at once; a producer's error rejects as RpcError;
   * `timeout` (ms) bounds the wait for the stream and then between items.
   */
  stream(method, params, { buffer = DEFAULT_STREAM_BUFFER, timeout = this.timeout, signal } = {}) {
    checkCall(method, params);
    if (!(buffer >= 1)) throw new RangeError("a stream's buffer must be at least 1 item");
    const client = this;
    return {
      [Symbol.asyncIterator]() {
        return client._consume(method, params, { buffer, timeout, signal });
      },
    };
  }

  /**
   * Events published on `topics` (a name or a list), through the server's
   * `$/subscribe` stream: `for await (const event of rpc.subscribe("news"))`.
   * Each event is `{topic, data, dropped}`, with `epoch` and `offset` when the
   * server keeps topic history. With `reconnect` the subscription outlives its
   * connections: after a reconnect it subscribes again from the last position
   * it saw, and the server replays what was missed (`subscription.recovered`),
   * or says it cannot with a notice event (`recovered: false` and a `reason`),
   * never a silent hole. Options: `since` (`{topic: {epoch, offset}}`, a
   * position you kept), `onSlow` (`"disconnect"`, `"drop_oldest"` or
   * `"drop_new"`; default: the server's), `buffer`, `timeout` (ms, to open),
   * `signal` (aborting it closes the subscription).
   */
  subscribe(topics, options = {}) {
    return new Subscription(this, topics, options);
  }

  /**
   * A stream's items, once it is open. `timeout` bounds the wait for the
   * stream to open, `itemTimeout` (default: the same) the wait for each item;
   * `announce` yields OPENED first, as soon as the stream is open.
   */
  async *_consume(method, params, { buffer, timeout, itemTimeout = timeout, signal, announce = false }) {
    if (signal?.aborted) throw signal.reason ?? abortError("aborted");
    this._checkConnected(method);
    const id = this._nextId++;
    const state = { items: [], ended: false, error: null, wake: null, buffer };
    const wake = () => {
      const resolve = state.wake;
      state.wake = null;
      if (resolve) resolve();
    };
    const onAbort = () => {
      if (!state.ended) {
        state.ended = true;
        state.error = signal.reason ?? abortError("aborted");
        state.aborted = true;
      }
      wake();
    };
    const waitForItem = () =>
      new Promise((resolve, reject) => {
        let timer;
        state.wake = () => {
          clearTimeout(timer);
          resolve();
        };
        if (itemTimeout > 0 && itemTimeout !== Infinity) {
          timer = setTimeout(() => {
            state.wake = null;
            reject(new RpcTimeoutError(method, itemTimeout));
          }, itemTimeout);
        }
      });
    this._streams.set(id, state);
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const opened = new Promise((resolve, reject) => {
        this._pending.set(id, {
          settle: (response) => (response.error ? reject(remoteError(response)) : resolve(response.result)),
          fail: reject,
        });
      });
      this._sendText(JSON.stringify(request(id, method, params)));
      this._sendText(JSON.stringify(notification(STREAM_CREDIT, { stream: id, window: buffer })));
      let openTimer;
      const result = await new Promise((resolve, reject) => {
        opened.then(resolve, reject);
        state.wake = () => state.aborted && reject(state.error); // an abort while opening
        if (timeout > 0 && timeout !== Infinity) {
          openTimer = setTimeout(() => reject(new RpcTimeoutError(method, timeout)), timeout);
        }
      }).finally(() => {
        clearTimeout(openTimer);
        state.wake = null;
      });
      if (result === null || typeof result !== "object" || result.stream !== id) {
        state.ended = true;
        this._sendQuietly(JSON.stringify(notification(STREAM_CANCEL, { stream: id })));
        throw new RpcError(ErrorCodes.INVALID_REQUEST, `'${method}' is not a stream on the server`);
      }
      if (announce) yield OPENED;
      let consumed = 0;
      for (;;) {
        while (state.items.length === 0) {
          if (state.ended) {
            if (state.error) throw state.error;
            return;
          }
          await waitForItem();
        }
        const item = state.items.shift();
        consumed += 1;
        if (consumed * 2 >= buffer && !state.ended) {
          // Credits go back in batches of half the window: one frame per several items.
          this._sendQuietly(JSON.stringify(notification(STREAM_CREDIT, { stream: id, credits: consumed })));
          consumed = 0;
        }
        yield item;
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
      this._pending.delete(id);
      this._streams.delete(id);
      if (!state.ended || state.aborted) this._sendQuietly(JSON.stringify(notification(STREAM_CANCEL, { stream: id })));
    }
  }

  /** Send a notification: never answered. Resolves once the frame is handed to the socket. */
  async notify(method, params) {
    checkCall(method, params);
    this._checkConnected(method);
    this._sendText(JSON.stringify(notification(method, params)));
  }

  /**
   * Send several calls in one frame. Items are `[method, params]`, `[method,
   * params, true]` (a notification) or `{method, params, notification}`.
   * Resolves with the calls' responses in the order given (notifications have
   * none), each `{jsonrpc, id, result}` or `{jsonrpc, id, error: {code,
   * message, data}}`: one failed call does not hide the others' results. A
   * timeout or an abort rejects the whole batch and cancels its unanswered calls.
   */
  batch(items, { timeout = this.timeout, signal } = {}) {
    return new Promise((resolve, reject) => {
      const calls = Array.from(items, (item) =>
        Array.isArray(item)
          ? { method: item[0], params: item[1], notification: Boolean(item[2]) }
          : { method: item.method, params: item.params, notification: Boolean(item.notification) },
      );
      if (calls.length === 0) throw new TypeError("batch() needs at least one call");
      for (const { method, params } of calls) checkCall(method, params);
      if (signal?.aborted) throw signal.reason ?? abortError("aborted");
      this._checkConnected("batch");

      const frame = [];
      const ids = [];
      const responses = [];
      let unanswered = 0;
      let timer;
      let done = false;
      const finish = (error) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        if (error === undefined) {
          resolve(responses);
          return;
        }
        for (const id of ids) if (this._pending.delete(id)) this._cancelRemote(id);
        reject(error);
      };
      const onAbort = () => finish(signal.reason ?? abortError("aborted"));
      for (const { method, params, notification: isNote } of calls) {
        if (isNote) {
          frame.push(notification(method, params));
          continue;
        }
        const id = this._nextId++;
        const slot = ids.length;
        ids.push(id);
        unanswered += 1;
        frame.push(request(id, method, params));
        this._pending.set(id, {
          settle: (response) => {
            responses[slot] = response;
            if (--unanswered === 0) finish();
          },
          fail: finish,
        });
      }
      try {
        this._sendText(JSON.stringify(frame));
      } catch (error) {
        for (const id of ids) this._pending.delete(id);
        throw error;
      }
      if (ids.length === 0) {
        resolve([]);
        return;
      }
      if (timeout > 0 && timeout !== Infinity) timer = setTimeout(finish, timeout, new RpcTimeoutError("batch", timeout));
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Close for good (no reconnect); pending calls fail with RpcConnectionError. Resolves once closed. */
  close(code = 1000, reason = "") {
    this._closing = true;
    this._wakeUp?.();
    if (this._ws !== null) this._ws.close(code, reason);
    else this._finish();
    return this._closed;
  }

  // ---------------------------------------------------------- connection

  /** Open a connection, retrying as `reconnect` says; then run onConnect. */
  async _establish(reconnecting) {
    const settings = this._reconnect;
    let delay = settings?.initialDelay ?? 0;
    for (let attempt = 1; ; attempt++) {
      if (reconnecting || attempt > 1) {
        await this._pause(jittered(delay, settings.jitter));
        delay = Math.min(delay * settings.factor, settings.maxDelay);
      }
      if (this._closing) throw new RpcConnectionError(`connecting to ${this.url}: closed by the client`);
      try {
        await this._open();
        break;
      } catch (error) {
        if (settings === null || attempt >= settings.maxAttempts || this._closing) {
          this._finish(error);
          throw error;
        }
        this._nextUrl(); // the next attempt tries the next node
      }
    }
    this._state = "open";
    // Idempotent calls whose answers did not come (or made while reconnecting): again, under the same ids.
    for (const pending of this._pending.values()) {
      if (pending.resend !== undefined) this._sendText(pending.resend);
    }
    this._emit("connect", { reconnected: reconnecting });
    await this._callback(this._onConnect);
  }

  /** Run onConnect / onDisconnect: a failure of theirs is an "error" event, never the connection's. */
  async _callback(callback, ...args) {
    if (!callback) return;
    try {
      await callback(this, ...args);
    } catch (error) {
      this._emit("error", { error });
    }
  }

  /** One connection attempt: resolves when open, rejects with RpcConnectionError when it closes first. */
  _open() {
    return new Promise((resolve, reject) => {
      const ws = new this._Socket(this._address(), this._protocols);
      ws.binaryType = "arraybuffer";
      this._ws = ws; // already, so that close() during the handshake ends this attempt
      let opened = false;
      ws.onopen = () => {
        opened = true;
        resolve();
      };
      ws.onmessage = (event) => this._receive(event.data);
      ws.onerror = () => {}; // the close event follows, with the code; this one says nothing more
      ws.onclose = (event) => {
        if (opened) {
          this._lost(ws, event);
          return;
        }
        if (this._ws === ws) this._ws = null;
        reject(new RpcConnectionError(`could not connect to ${this.url} (close code ${event.code})`, event.code));
      };
    });
  }

  /** Where the next connection goes: the current URL, asking for our session in the query when we use one. */
  _address() {
    if (!this._useSession) return this.url;
    const address = new URL(this.url);
    address.searchParams.set(SESSION_QUERY, this._sessionId ?? "new");
    return address.href;
  }

  /** Move on to the next URL of the list (another node): after a failed attempt, or to reconnect. */
  _nextUrl() {
    if (this.urls.length > 1) {
      this._urlIndex = (this._urlIndex + 1) % this.urls.length;
      this.url = this.urls[this._urlIndex];
    }
  }

  /** The connection ended: fail what waits on it, then reconnect or close for good. */
  _lost(ws, { code, reason }) {
    if (ws !== this._ws) return;
    this._ws = null;
    const willReconnect = !this._closing && this._reconnect !== null && !FINAL_CLOSE_CODES.has(code);
    const why = this._closing ? "closed by the client" : `lost (close code ${code}${reason ? `: ${reason}` : ""})`;
    const error = new RpcConnectionError(`connection to ${this.url} ${why}`, code, reason);
    for (const [id, pending] of this._pending) {
      if (willReconnect && pending.resend !== undefined) continue; // idempotent: sent again on the next connection
      this._pending.delete(id);
      pending.fail(error);
    }
    for (const controller of this._incoming.values()) controller.abort(error);
    this._incoming.clear();
    for (const state of this._streams.values()) {
      state.ended = true;
      state.error = error;
      if (state.wake) state.wake();
    }
    this._state = willReconnect ? "reconnecting" : "closed";
    this._emit("disconnect", { code, reason, willReconnect });
    this._callback(this._onDisconnect, { code, reason, willReconnect });
    if (willReconnect) {
      this._nextUrl(); // a drain (1012) or a crash of this node: the next one of the list
      this._establish(true).catch(() => {}); // giving up ends in _finish(): the "close" event
    } else this._finish(error);
  }

  /** Closed for good: once. Calls still waiting (idempotent ones kept for a reconnect) fail with `error`. */
  _finish(error) {
    if (this._finished) return;
    this._finished = true;
    this._state = "closed";
    const why = this._closing ? "closed by the client" : "closed";
    const failure = error instanceof RpcConnectionError ? error : new RpcConnectionError(`${this.url}: ${why}`);
    for (const [id, pending] of this._pending) {
      this._pending.delete(id);
      pending.fail(failure);
    }
    this._emit("close", {});
    this._resolveClosed();
  }

  /** Whether a lost connection will be (or is being) re-established. */
  _canReconnect() {
    return !this._closing && this._reconnect !== null && this._state !== "closed";
  }

  /** Resolves once a connection is open (at once if one is); rejects once the client is closed for good, or on `signal`. */
  _whenConnected(signal) {
    return new Promise((resolve, reject) => {
      if (this._state === "open" && this.connected) return resolve();
      if (this._state === "closed") return reject(new RpcConnectionError(`${this.url} is closed`));
      const done = (event) => {
        this.removeEventListener("connect", done);
        this.removeEventListener("close", done);
        signal?.removeEventListener("abort", done);
        if (event.type === "connect") resolve();
        else if (event.type === "abort") reject(signal.reason ?? abortError("aborted"));
        else reject(new RpcConnectionError(`${this.url} is closed`));
      };
      this.addEventListener("connect", done);
      this.addEventListener("close", done);
      signal?.addEventListener("abort", done);
      if (signal?.aborted) done({ type: "abort" });
    });
  }

  /** Wait between attempts; close() ends the wait at once. */
  _pause(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this._wakeUp = () => {
        clearTimeout(timer);
        resolve();
      };
    }).finally(() => (this._wakeUp = null));
  }

  _checkConnected(what) {
    if (!this.connected) {
      throw new RpcConnectionError(`'${what}' not sent: ${this.url} is ${this._state === "closed" ? "closed" : "not connected"}`);
    }
  }

  _sendText(text) {
    this._ws.send(text);
  }

  /** Send if we can; an answer or a cancel nobody can receive any more is dropped. */
  _sendQuietly(text) {
    if (this.connected) this._ws.send(text);
  }

  _cancelRemote(id) {
    this._sendQuietly(JSON.stringify(notification(CANCEL_REQUEST, { id })));
  }

  _emit(type, detail) {
    const event = new Event(type);
    event.detail = detail;
    this.dispatchEvent(event);
  }

  // ------------------------------------------------------------- receiving

  _receive(data) {
    const text = typeof data === "string" ? data : new TextDecoder().decode(data);
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      this._sendQuietly(JSON.stringify(errorResponse(null, ErrorCodes.PARSE_ERROR, "Parse error")));
      return;
    }
    if (!Array.isArray(message)) {
      const answer = this._handle(message);
      if (answer !== undefined) answer.then((a) => a && this._sendQuietly(encodeAnswer(a)));
      return;
    }
    if (message.length === 0) {
      this._sendQuietly(JSON.stringify(errorResponse(null, ErrorCodes.INVALID_REQUEST, "Invalid Request: empty batch")));
      return;
    }
    // A batch: each item handled as on its own, the answers sent together in one frame.
    const answers = message.map((item) => this._handle(item)).filter((a) => a !== undefined);
    if (answers.length === 0) return;
    Promise.all(answers).then((parts) => {
      const texts = parts.filter(Boolean).map(encodeAnswer);
      if (texts.length > 0) this._sendQuietly(`[${texts.join(",")}]`);
    });
  }

  /** One message: undefined when nothing is to be answered, else a promise of the answer (or of undefined). */
  _handle(message) {
    if (message === null || typeof message !== "object" || Array.isArray(message)) {
      return Promise.resolve(errorResponse(null, ErrorCodes.INVALID_REQUEST, "Invalid Request"));
    }
    const { id, method, params } = message;
    if (typeof method === "string") {
      if (params !== undefined && params !== null && typeof params !== "object") {
        if (!("id" in message)) return undefined;
        const text = "Invalid Request: params must be an object or an array";
        return Promise.resolve(errorResponse(id, ErrorCodes.INVALID_REQUEST, text));
      }
      if (!("id" in message)) {
        this._notification(method, params);
        return undefined;
      }
      return this._request(id, method, params);
    }
    if ("result" in message || "error" in message || ("id" in message && !("method" in message))) {
      // A response (one with neither member, as fastapi-ws-rpc sends for None, reads as result null).
      const pending = this._pending.get(id);
      if (pending !== undefined) {
        this._pending.delete(id);
        pending.settle(message);
      } else if (id === null && message.error) {
        this._emit("error", { error: remoteError(message) }); // an error that answers no call (say, a frame refused whole)
      } // else: the answer to a call we gave up on, late: dropped
      return undefined;
    }
    return Promise.resolve(errorResponse(id ?? null, ErrorCodes.INVALID_REQUEST, "Invalid Request"));
  }

  /**
   * The server calls one of our methods. It is called with the params spread
   * (positional) or as one object (named), then a context `{id, method, signal,
   * rpc}` as the last argument (vscode-jsonrpc's convention); `signal` aborts
   * when the server cancels the call or the connection ends, and the answer of
   * an aborted call is never sent.
   */
  async _request(id, method, params) {
    const handler = this._lookup(method);
    if (handler === undefined) return errorResponse(id, ErrorCodes.METHOD_NOT_FOUND, `Method not found: ${method}`);
    const controller = new AbortController();
    this._incoming.set(id, controller);
    try {
      const result = await this._invoke(handler, id, method, params, controller.signal);
      if (controller.signal.aborted) return undefined;
      return { jsonrpc: "2.0", id, result: result === undefined ? null : result };
    } catch (error) {
      if (controller.signal.aborted) return undefined;
      return this._failure(id, method, error);
    } finally {
      if (this._incoming.get(id) === controller) this._incoming.delete(id);
    }
  }

  _notification(method, params) {
    if (method.startsWith("$/")) {
      // The protocol's own notifications, handled here. Others (a newer
      // server's, such as `$/meta` or the `$/stream.*` of streams) are ignored,
      // so a page never breaks on what it does not know.
      if (method === SESSION_NOTICE && params && typeof params.id === "string") {
        // The server's first message on a connection that asked for a session: its id, to present next time.
        if (this._useSession) {
          this._sessionId = params.id;
          this.session = { id: params.id, resumed: params.resumed === true, ttl: params.ttl ?? null };
          this._emit("session", { ...this.session });
        }
      } else if (method === CANCEL_REQUEST) {
        const id = Array.isArray(params) ? params[0] : params?.id;
        const controller = this._incoming.get(id);
        if (controller !== undefined) {
          this._incoming.delete(id);
          controller.abort(abortError("cancelled by the server ($/cancelRequest)"));
        }
      } else if (method === STREAM_ITEM && params && "stream" in params) {
        const state = this._streams.get(params.stream);
        if (state === undefined || state.ended) {
          // Items of a stream nobody here consumes (a stream method called as a
          // plain call): tell the producer to stop, as the Python client does.
          this._sendQuietly(JSON.stringify(notification(STREAM_CANCEL, { stream: params.stream })));
        } else if (state.items.length >= Math.max(state.buffer, INITIAL_CREDITS)) {
          state.ended = true; // more items than credits: a broken producer
          state.error = new RpcError(ErrorCodes.INTERNAL_ERROR, "the producer sent more items than credits");
          this._sendQuietly(JSON.stringify(notification(STREAM_CANCEL, { stream: params.stream })));
          if (state.wake) state.wake();
        } else {
          state.items.push(params.item === undefined ? null : params.item);
          if (state.wake) state.wake();
        }
      } else if (method === STREAM_END && params && "stream" in params) {
        const state = this._streams.get(params.stream);
        if (state !== undefined && !state.ended) {
          state.ended = true;
          const e = params.error;
          if (e && typeof e === "object") state.error = new RpcError(e.code, e.message, e.data);
          if (state.wake) state.wake();
        }
      }
      return;
    }
    const handler = this._lookup(method);
    if (handler === undefined) return; // nobody waits for an answer: nothing to say
    this._invoke(handler, undefined, method, params, new AbortController().signal).catch((error) =>
      this._emit("error", { error, method }),
    );
  }

  async _invoke(handler, id, method, params, signal) {
    const args = params === undefined || params === null ? [] : Array.isArray(params) ? [...params] : [params];
    args.push({ id, method, signal, rpc: this });
    return handler.apply(this.methods, args);
  }

  /** A method threw: answer its RpcError as it is; anything else is -32603, its text kept to the page. */
  _failure(id, method, error) {
    if (error instanceof RpcError && error.response === undefined) {
      return errorResponse(id, error.code, error.message, error.data);
    }
    if (error instanceof RpcError) {
      // A call this method made to the server failed and the method let it
      // escape: its failure, not a verdict on the server's call (a -32601 of
      // the inner call would read as "your method does not exist").
      const message = `Internal error: a nested call failed: [${error.code}] ${error.message}`;
      return errorResponse(id, ErrorCodes.INTERNAL_ERROR, message, error.toJSON());
    }
    this._emit("error", { error, method });
    return errorResponse(id, ErrorCodes.INTERNAL_ERROR, "Internal error");
  }

  /** The page's method `name`: a function of `methods` (own or inherited, not Object's); `_` names are private. */
  _lookup(name) {
    if (name.startsWith("_") || name === "constructor") return undefined;
    for (let owner = this.methods; owner && owner !== Object.prototype; owner = Object.getPrototypeOf(owner)) {
      if (Object.prototype.hasOwnProperty.call(owner, name)) {
        return typeof owner[name] === "function" ? owner[name] : undefined;
      }
    }
    return name === "rpc.discover" ? () => this._discover() : undefined;
  }

  /** `rpc.discover`: an OpenRPC document naming the page's methods (JavaScript says nothing of their types). */
  _discover() {
    const names = new Set();
    for (let owner = this.methods; owner && owner !== Object.prototype; owner = Object.getPrototypeOf(owner)) {
      for (const name of Object.getOwnPropertyNames(owner)) {
        if (this._lookup(name) !== undefined && name !== "rpc.discover") names.add(name);
      }
    }
    return {
      openrpc: "1.2.6",
      info: { title: "fastwsrpc.js client", version: "1" },
      methods: [...names].sort().map((name) => ({ name, params: [], result: { name: "result", schema: {} } })),
    };
  }
}

// ------------------------------------------------------------ subscriptions

/**
 * A subscription to topics (`rpc.subscribe(...)`); with `reconnect`, it
 * outlives its connections. Iterate it (`for await (const event of
 * subscription)`), or `await open()` then `await next()`. It keeps the position
 * (`epoch`, `offset`) of the last event per topic in `positions`; after a
 * reconnect it subscribes again from there and the server's topic history
 * fills the gap: `recovered` is true when it did, false when it could not (a
 * notice event comes first, saying why: `{topic, recovered: false, reason,
 * epoch, offset}`). See docs/guide/recovery.md.
 */
export class Subscription {
  constructor(client, topics, { since, onSlow, buffer = DEFAULT_STREAM_BUFFER, timeout = client.timeout, signal } = {}) {
    this.topics = typeof topics === "string" ? [topics] : Array.from(topics ?? []);
    if (this.topics.length === 0 || !this.topics.every((topic) => typeof topic === "string")) {
      throw new TypeError("subscribe() needs a topic name, or a list of them");
    }
    if (!(buffer >= 1)) throw new RangeError("a subscription's buffer must be at least 1 event");
    this._client = client;
    this._onSlow = onSlow;
    this._buffer = buffer;
    this._timeout = timeout;
    /** The last position seen, per topic: what a resubscription asks from (`{epoch, offset}`). */
    this.positions = Object.create(null);
    for (const [topic, position] of Object.entries(since ?? {})) {
      const [epoch, offset] = Array.isArray(position) ? position : [position.epoch, position.offset];
      this.positions[topic] = { epoch, offset };
    }
    this._given = new Set(Object.keys(this.positions)); // topics the page gave a position for
    /** After a resubscription: whether every topic's missed events were replayed (null before any). */
    this.recovered = null;
    /** How many times it subscribed again after a lost connection. */
    this.resubscribes = 0;
    this._iterator = null; // the current connection's `$/subscribe` stream
    this._opening = null;
    this._subscribed = false; // subscribed once at least: notices after that are what a page is told
    this._first = true; // the current stream is the first subscription
    this._closed = false;
    this._controller = new AbortController(); // aborts the stream (and a wait for a reconnect) on close()
    if (signal?.aborted) this.close();
    else signal?.addEventListener("abort", () => this.close(), { once: true });
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  /** Subscribe (once): nothing published after this resolves is missed. */
  async open() {
    if (this._iterator !== null || this._closed) return;
    this._opening ??= this._subscribe().finally(() => (this._opening = null));
    try {
      await this._opening;
    } catch (error) {
      if (!this._closed) throw error; // closed while opening: nothing to say
    }
  }

  async _subscribe() {
    const params = { topics: this.topics, since: { ...this.positions } }; // since always: {} the first time
    if (this._onSlow !== undefined) params.on_slow = this._onSlow;
    const iterator = this._client._consume(SUBSCRIBE, params, {
      buffer: this._buffer,
      timeout: this._timeout,
      itemTimeout: Infinity, // events come when they are published: no bound between them
      signal: this._controller.signal,
      announce: true,
    });
    await iterator.next(); // OPENED, or the failure to open
    if (this._closed) {
      await iterator.return(); // closed meanwhile: cancel it on the server
      return;
    }
    this._iterator = iterator;
    if (this._subscribed) this._first = false;
    this._subscribed = true;
  }

  /** The next event (a notice only when events were lost): `{value, done}`; done once closed or ended by the server. */
  async next() {
    for (;;) {
      let step;
      try {
        await this.open();
        if (this._iterator === null) return { value: undefined, done: true }; // closed
        step = await this._iterator.next();
      } catch (error) {
        this._iterator = null; // that stream is over
        if (this._closed) return { value: undefined, done: true };
        const client = this._client;
        let wait;
        if (error instanceof RpcConnectionError && client._canReconnect()) {
          wait = client._whenConnected(this._controller.signal);
        } else if (error instanceof RpcError && error.code === HISTORY_UNAVAILABLE) {
          // The server cannot read the history now: ask again shortly, from the same positions.
          const delay = jittered(client._reconnect?.initialDelay ?? RECONNECT_DEFAULTS.initialDelay, "full");
          const signal = this._controller.signal;
          wait = new Promise((resolve) => {
            const stop = () => {
              clearTimeout(timer);
              signal.removeEventListener("abort", stop);
              resolve();
            };
            const timer = setTimeout(stop, delay);
            signal.addEventListener("abort", stop, { once: true });
          });
        } else {
          this.close();
          throw error;
        }
        try {
          await wait;
        } catch (failure) {
          if (this._closed) return { value: undefined, done: true };
          this.close();
          throw failure; // the client is closed for good
        }
        if (this._closed) return { value: undefined, done: true };
        if (this._subscribed) {
          this.resubscribes += 1;
          this.recovered = null;
        }
        continue;
      }
      if (step.done) {
        this.close(); // the server ended the subscription
        return step;
      }
      const event = step.value;
      if (event === null || typeof event !== "object") return { value: event, done: false };
      const topic = event.topic;
      const notice = event.recovered !== undefined && event.recovered !== null;
      if (event.epoch != null && event.offset != null) {
        this.positions[topic] = { epoch: event.epoch, offset: event.offset };
      } else if (notice && event.offset === 0 && !(topic in this.positions)) {
        // The topic had no publication yet: start "before its first" (see docs/guide/recovery.md);
        // a notice with no offset at all (the position could not be read) leaves it to the events.
        this.positions[topic] = { epoch: null, offset: 0 };
      }
      if (!notice) return { value: event, done: false };
      // Where a subscription starts (no position given for the topic): nothing was missed.
      if (event.reason === "new" || (this._first && !this._given.has(topic))) continue;
      if (event.recovered) {
        if (this.recovered === null) this.recovered = true;
        continue;
      }
      this.recovered = false;
      return { value: event, done: false }; // told, never given a silent hole
    }
  }

  /** Stop the subscription (the server forgets it). Resolves once the stream is cancelled. */
  async close() {
    if (!this._closed) {
      this._closed = true;
      this._controller.abort(abortError("subscription closed"));
    }
    const iterator = this._iterator;
    this._iterator = null;
    if (iterator !== null) await iterator.return().catch(() => {});
  }

  /** `break` out of `for await`: close. */
  async return() {
    await this.close();
    return { value: undefined, done: true };
  }
}

/** The RpcError of an error response (a malformed error object still rejects, as -32603). */
function remoteError(response) {
  const error = response.error;
  if (error === null || typeof error !== "object") {
    return new RpcError(ErrorCodes.INTERNAL_ERROR, String(error), undefined, response);
  }
  const code = typeof error.code === "number" ? error.code : ErrorCodes.INTERNAL_ERROR;
  return new RpcError(code, String(error.message ?? ""), error.data, response);
}

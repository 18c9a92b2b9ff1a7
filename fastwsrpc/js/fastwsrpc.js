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
// `rpc.discover` answers an OpenRPC document.

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

/**
 * Close codes after which reconnecting cannot help: they say this client is
 * wrong (protocol error, unacceptable data, policy violation, server error),
 * so, as the Python client, we do not come back.
 */
const FINAL_CLOSE_CODES = new Set([1002, 1003, 1007, 1008, 1011]);

/**
 * Reconnect settings used by `reconnect: true`; `reconnect: {...}` overrides any
 * of them. Reconnecting is off unless asked, as in the Python client: what a
 * lost connection means for a page's state is the page's decision (onConnect
 * runs again after each reconnect: subscribe again there), and a page that
 * wants it says `reconnect: true`.
 */
export const RECONNECT_DEFAULTS = Object.freeze({
  initialDelay: 500, // ms before the first attempt after a loss
  maxDelay: 30000, // the delay doubles (factor) up to this
  factor: 2,
  jitter: 0.25, // each delay is stretched by a random 0-25%, so a restarted server is not hit by every page at once
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
  return delay * (1 + Math.random() * jitter);
}

// ------------------------------------------------------------------- client

/**
 * Connect to a fastwsrpc endpoint; resolves once the connection is open (and
 * `onConnect` has run), with the client.
 *
 * Options: `methods` (the page's methods the server may call), `WebSocket`
 * (the class to use: Node 20 passes the `ws` package's), `timeout` (default
 * per-call timeout, ms; none when absent), `reconnect` (false by default;
 * `true` or settings, see RECONNECT_DEFAULTS), `protocols` (default
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
 * no more reconnects), `error` ({error, method}: a page method threw something
 * other than an RpcError, an onConnect/onDisconnect callback failed, or the
 * server sent an error that answers no call of ours).
 */
export class RpcClient extends EventTarget {
  constructor(url, options = {}) {
    super();
    const {
      methods = {},
      WebSocket: Socket = globalThis.WebSocket,
      timeout,
      reconnect = false,
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
    this.url = resolveUrl(url);
    this.methods = methods;
    this.timeout = timeout;
    this._Socket = Socket;
    this._protocols = protocols;
    this._reconnect = reconnect ? { ...RECONNECT_DEFAULTS, ...(reconnect === true ? {} : reconnect) } : null;
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
   */
  call(method, params, { timeout = this.timeout, signal } = {}) {
    return new Promise((resolve, reject) => {
      checkCall(method, params);
      if (signal?.aborted) throw signal.reason ?? abortError("aborted");
      this._checkConnected(method);
      const id = this._nextId++;
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
      });
      try {
        this._sendText(JSON.stringify(request(id, method, params)));
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
        return client._consume(method, params, buffer, timeout, signal);
      },
    };
  }

  async *_consume(method, params, buffer, timeout, signal) {
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
        if (timeout > 0 && timeout !== Infinity) {
          timer = setTimeout(() => {
            state.wake = null;
            reject(new RpcTimeoutError(method, timeout));
          }, timeout);
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
          this._finish();
          throw error;
        }
      }
    }
    this._state = "open";
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
      const ws = new this._Socket(this.url, this._protocols);
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

  /** The connection ended: fail what waits on it, then reconnect or close for good. */
  _lost(ws, { code, reason }) {
    if (ws !== this._ws) return;
    this._ws = null;
    const why = this._closing ? "closed by the client" : `lost (close code ${code}${reason ? `: ${reason}` : ""})`;
    const error = new RpcConnectionError(`connection to ${this.url} ${why}`, code, reason);
    for (const [id, pending] of this._pending) {
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
    const willReconnect = !this._closing && this._reconnect !== null && !FINAL_CLOSE_CODES.has(code);
    this._state = willReconnect ? "reconnecting" : "closed";
    this._emit("disconnect", { code, reason, willReconnect });
    this._callback(this._onDisconnect, { code, reason, willReconnect });
    if (willReconnect) this._establish(true).catch(() => {}); // giving up ends in _finish(): the "close" event
    else this._finish();
  }

  /** Closed for good: once. */
  _finish() {
    if (this._finished) return;
    this._finished = true;
    this._state = "closed";
    this._emit("close", {});
    this._resolveClosed();
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
      if (method === CANCEL_REQUEST) {
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

/** The RpcError of an error response (a malformed error object still rejects, as -32603). */
function remoteError(response) {
  const error = response.error;
  if (error === null || typeof error !== "object") {
    return new RpcError(ErrorCodes.INTERNAL_ERROR, String(error), undefined, response);
  }
  const code = typeof error.code === "number" ? error.code : ErrorCodes.INTERNAL_ERROR;
  return new RpcError(code, String(error.message ?? ""), error.data, response);
}

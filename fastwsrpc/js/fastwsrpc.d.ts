// Types of fastwsrpc.js: the browser (and Node) client of fastwsrpc.
// Times are in milliseconds.

/** The error codes JSON-RPC 2.0 reserves. */
export declare const ErrorCodes: Readonly<{
  PARSE_ERROR: -32700;
  INVALID_REQUEST: -32600;
  METHOD_NOT_FOUND: -32601;
  INVALID_PARAMS: -32602;
  INTERNAL_ERROR: -32603;
}>;

/** `"$/cancelRequest"`: the notification that tells the other side we gave up on a call. */
export declare const CANCEL_REQUEST: "$/cancelRequest";

/** `"jsonrpc2.0"`: the WebSocket subprotocol offered by default. */
export declare const SUBPROTOCOL: "jsonrpc2.0";

/** `"$/subscribe"`: the stream method of topic subscriptions. */
export declare const SUBSCRIBE: "$/subscribe";
/** The error a subscription ends with when the server cannot read the topic history now (the client tries again). */
export declare const HISTORY_UNAVAILABLE: -32002;
/** `"fastwsrpc_session"`: the query parameter that asks for a session (`new`) or presents one (its id). */
export declare const SESSION_QUERY: "fastwsrpc_session";
/** `"$/session"`: the server's first message on a connection that asked for a session. */
export declare const SESSION_NOTICE: "$/session";
/** `"idem-"`: the prefix of idempotent calls' ids (`idem-1`, `idem-2`, ...). */
export declare const IDEMPOTENT_PREFIX: "idem-";

export interface ReconnectOptions {
  /** The first attempt after a loss comes within this (ms, default 500). */
  initialDelay?: number;
  /** The delay grows by `factor` up to this (ms, default 30000). */
  maxDelay?: number;
  /** Growth of the delay per attempt (default 2). */
  factor?: number;
  /**
   * `"full"` (default): each wait is a random time between 0 and the delay (full jitter);
   * a number: each delay is stretched by a random 0..jitter fraction.
   */
  jitter?: "full" | number;
  /** Attempts in a row before giving up (default Infinity). */
  maxAttempts?: number;
}

export declare const RECONNECT_DEFAULTS: Readonly<Required<ReconnectOptions>>;

/** JSON-RPC params: an object (named) or an array (positional). */
export type Params = Record<string, unknown> | unknown[];

export interface JsonRpcErrorObject {
  code: number;
  message: string;
  data?: unknown;
}

/** One response of a batch: the result or the error of that call. */
export type BatchResponse<T = unknown> =
  | { jsonrpc: "2.0"; id: number; result: T; error?: undefined }
  | { jsonrpc: "2.0"; id: number; error: JsonRpcErrorObject; result?: undefined };

/** One call of a batch: `[method, params]`, `[method, params, true]` (a notification) or an object. */
export type BatchItem =
  | [method: string, params?: Params | null, notification?: boolean]
  | { method: string; params?: Params | null; notification?: boolean };

export interface StreamOptions {
  /** Items buffered here at most: the credits granted to the producer (default 64). */
  buffer?: number;
  /** Milliseconds to wait for the stream to open, then between items. */
  timeout?: number;
  /** Aborting it stops the stream on the server. */
  signal?: AbortSignal;
}

export declare const STREAM_ITEM: "$/stream.item";
export declare const STREAM_END: "$/stream.end";
export declare const STREAM_CREDIT: "$/stream.credit";
export declare const STREAM_CANCEL: "$/stream.cancel";
export declare const DEFAULT_STREAM_BUFFER: number;

export interface CallOptions {
  /** Give up after this many ms (the server is told to cancel). Absent: the client's default; 0 or Infinity: none. */
  timeout?: number;
  /** Aborting it gives up on the call (the server is told to cancel); the call rejects with the signal's reason. */
  signal?: AbortSignal;
}

export interface IdempotentCallOptions extends CallOptions {
  /**
   * Safe to run twice: if the connection drops before the answer, the call is sent again on
   * the next connection (with `reconnect`) under the same id, and a server with sessions runs
   * it once. Default: whether the method is in `idempotentMethods`. `timeout` covers the whole.
   */
  idempotent?: boolean;
}

/** What the server said of our session (its `$/session`). */
export interface SessionInfo {
  id: string;
  /** Whether this connection resumed the session (false: a new one; what the old one held is gone). */
  resumed: boolean;
  /** Seconds the server keeps the session after a connection is lost. */
  ttl: number | null;
}

/** A position in a topic's history: every publication up to `offset` of `epoch` (`epoch` null, `offset` 0: before the first). */
export interface TopicPosition {
  epoch: string | null;
  offset: number;
}

/** A publication on a topic; `epoch` and `offset` when the server keeps topic history. */
export interface TopicEvent<T = unknown> {
  topic: string;
  data: T;
  /** Events this subscription lost so far (only with `onSlow` "drop_oldest" or "drop_new"). */
  dropped: number;
  epoch?: string;
  offset?: number;
  recovered?: undefined;
}

/** Told instead of a silent hole: the events after the subscription's position could not all be replayed. */
export interface TopicNotice {
  topic: string;
  recovered: false;
  /** "gap", "epoch", "ahead" or "no_history" (see docs/guide/recovery.md). */
  reason: string;
  /** The position the subscription goes on from. */
  epoch: string | null;
  offset: number | null;
  missed: number;
}

export interface SubscribeOptions {
  /** Start after these positions (`{topic: {epoch, offset}}` or `{topic: [epoch, offset]}`), kept from an earlier subscription. */
  since?: Record<string, TopicPosition | [string | null, number]>;
  /** What the server does when this subscriber cannot keep up; default: the server's. */
  onSlow?: "disconnect" | "drop_oldest" | "drop_new";
  /** Events buffered here at most (default 64). */
  buffer?: number;
  /** Milliseconds to wait for the subscription to open (default: the client's timeout). */
  timeout?: number;
  /** Aborting it closes the subscription. */
  signal?: AbortSignal;
}

/**
 * A subscription (`rpc.subscribe(...)`); with `reconnect` it outlives its connections: it
 * subscribes again from the last position it saw, and the server replays what was missed.
 */
export declare class Subscription<T = unknown> implements AsyncIterableIterator<TopicEvent<T> | TopicNotice> {
  readonly topics: string[];
  /** The last position seen, per topic. */
  readonly positions: Record<string, TopicPosition>;
  /** After a resubscription: whether every topic's missed events were replayed (null before any). */
  readonly recovered: boolean | null;
  /** How many times it subscribed again after a lost connection. */
  readonly resubscribes: number;
  /** Subscribe now (once): nothing published after this resolves is missed. */
  open(): Promise<void>;
  /** The next event; a notice only when events were lost. Done once closed, or ended by the server. */
  next(): Promise<IteratorResult<TopicEvent<T> | TopicNotice, undefined>>;
  return(): Promise<IteratorResult<TopicEvent<T> | TopicNotice, undefined>>;
  /** Stop the subscription (the server forgets it). */
  close(): Promise<void>;
  [Symbol.asyncIterator](): this;
}

/** What a page method gets as its last argument, after the params the server sent. */
export interface CallContext<Remote extends object = any> {
  /** The request's id; undefined for a notification. */
  id: string | number | null | undefined;
  method: string;
  /** Aborts when the server cancels the call ($/cancelRequest) or the connection ends; the answer is then not sent. */
  signal: AbortSignal;
  /** The client: `context.rpc.other.x()` calls the server back. */
  rpc: RpcClient<Remote>;
}

/**
 * The page's methods the server may call. Named params arrive as one object,
 * positional ones spread, then the CallContext. Names starting with `_` are never
 * callable. Return a value (or a promise); throw an RpcError to answer with its code.
 */
export type Methods = object;

export interface ConnectOptions<Remote extends object = any> {
  methods?: Methods;
  /** The WebSocket class; default `globalThis.WebSocket`. Node 20 passes the `ws` package's. */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocket | any;
  /** Default per-call timeout (ms); none when absent. */
  timeout?: number;
  /** Reconnect after a lost connection (and retry the first one); off by default. */
  reconnect?: boolean | ReconnectOptions;
  /** Ask the server for a session (`?fastwsrpc_session=`); default: when `reconnect` is on. */
  session?: boolean;
  /** Names of methods whose calls are idempotent by default (see `IdempotentCallOptions`). */
  idempotentMethods?: Iterable<string>;
  /** Subprotocols offered; default `["jsonrpc2.0"]`. */
  protocols?: string[];
  /** After each (re)connection; awaited by `connect()` the first time. */
  onConnect?: (rpc: RpcClient<Remote>) => void | Promise<void>;
  onDisconnect?: (rpc: RpcClient<Remote>, info: DisconnectInfo) => void | Promise<void>;
}

export interface DisconnectInfo {
  code: number;
  reason: string;
  willReconnect: boolean;
}

/** `rpc.other`: each property calls the server's method of that name. */
export type RemoteProxy<Remote extends object> = {
  [K in keyof Remote]: Remote[K] extends (...args: infer A) => infer R
    ? (...args: A) => Promise<Awaited<R>>
    : (...args: unknown[]) => Promise<unknown>;
};

/** An untyped server: any method, any params. */
export type AnyRemote = Record<string, (...args: any[]) => any>;

export type RpcClientState = "connecting" | "open" | "reconnecting" | "closed";

export interface RpcClientEventMap {
  connect: CustomEvent<{ reconnected: boolean }>;
  disconnect: CustomEvent<DisconnectInfo>;
  close: CustomEvent<Record<string, never>>;
  session: CustomEvent<SessionInfo>;
  error: CustomEvent<{ error: unknown; method?: string }>;
}

/** One URL, or the URLs of a service's nodes: tried in turn, the next one after a failure, a loss or a drain. */
export type Urls = string | URL | Array<string | URL>;

export declare class RpcClient<Remote extends object = AnyRemote> extends EventTarget {
  /** The ws:// or wss:// URL of the current (or next) connection, resolved. */
  readonly url: string;
  /** Every URL, resolved, in the order they are tried. */
  readonly urls: string[];
  readonly methods: Methods;
  /** Methods whose calls are idempotent unless the call says otherwise. */
  readonly idempotentMethods: Set<string>;
  /** What the server said of our session on the last connection that asked for one; null before. */
  readonly session: SessionInfo | null;
  /** Default per-call timeout (ms). */
  timeout: number | undefined;
  /** Calls the server: `await rpc.other.add({a: 1, b: 2})` (named), `rpc.other.add(1, 2)` (positional). */
  readonly other: RemoteProxy<Remote>;
  readonly state: RpcClientState;
  readonly connected: boolean;
  /** Resolves once the client is closed for good. */
  readonly closed: Promise<void>;

  constructor(url: Urls, options?: ConnectOptions<Remote>);
  call<T = any>(method: string, params?: Params | null, options?: IdempotentCallOptions): Promise<T>;
  notify(method: string, params?: Params | null): Promise<void>;
  /** Consume the server's stream method (an async generator there), with credit-based flow control. */
  stream<T = unknown>(method: string, params?: Params | null, options?: StreamOptions): AsyncIterable<T>;
  batch(items: Iterable<BatchItem>, options?: CallOptions): Promise<BatchResponse[]>;
  /** Events published on `topics`; with `reconnect`, recovered across reconnects from the server's topic history. */
  subscribe<T = unknown>(topics: string | Iterable<string>, options?: SubscribeOptions): Subscription<T>;
  close(code?: number, reason?: string): Promise<void>;

  addEventListener<K extends keyof RpcClientEventMap>(
    type: K,
    listener: (event: RpcClientEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof RpcClientEventMap>(
    type: K,
    listener: (event: RpcClientEventMap[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}

/** Connect; resolves once open (and onConnect has run). */
export declare function connect<Remote extends object = AnyRemote>(
  url: Urls,
  options?: ConnectOptions<Remote>,
): Promise<RpcClient<Remote>>;

/** The other side answered with an error; or, thrown by a page method, the error to answer with. */
export declare class RpcError extends Error {
  readonly code: number;
  readonly data?: unknown;
  /** The response it came in (only on errors the other side sent). */
  readonly response?: { jsonrpc: "2.0"; id: unknown; error: JsonRpcErrorObject };
  constructor(code: number, message: string, data?: unknown);
  toJSON(): JsonRpcErrorObject;
}

/** No answer within the call's timeout (the other side was told to cancel). */
export declare class RpcTimeoutError extends Error {
  readonly method: string;
  readonly timeout: number;
  constructor(method: string, timeout: number);
}

/** The connection could not be made, was lost before the answer, or is closed. */
export declare class RpcConnectionError extends Error {
  readonly closeCode?: number;
  readonly closeReason?: string;
  constructor(message: string, closeCode?: number, closeReason?: string);
}

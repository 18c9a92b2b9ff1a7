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

export interface ReconnectOptions {
  /** Delay before the first attempt after a loss (ms, default 500). */
  initialDelay?: number;
  /** The delay grows by `factor` up to this (ms, default 30000). */
  maxDelay?: number;
  /** Growth of the delay per attempt (default 2). */
  factor?: number;
  /** Each delay is stretched by a random 0..jitter fraction (default 0.25). */
  jitter?: number;
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
  error: CustomEvent<{ error: unknown; method?: string }>;
}

export declare class RpcClient<Remote extends object = AnyRemote> extends EventTarget {
  /** The ws:// or wss:// URL, resolved. */
  readonly url: string;
  readonly methods: Methods;
  /** Default per-call timeout (ms). */
  timeout: number | undefined;
  /** Calls the server: `await rpc.other.add({a: 1, b: 2})` (named), `rpc.other.add(1, 2)` (positional). */
  readonly other: RemoteProxy<Remote>;
  readonly state: RpcClientState;
  readonly connected: boolean;
  /** Resolves once the client is closed for good. */
  readonly closed: Promise<void>;

  constructor(url: string | URL, options?: ConnectOptions<Remote>);
  call<T = any>(method: string, params?: Params | null, options?: CallOptions): Promise<T>;
  notify(method: string, params?: Params | null): Promise<void>;
  /** Consume the server's stream method (an async generator there), with credit-based flow control. */
  stream<T = unknown>(method: string, params?: Params | null, options?: StreamOptions): AsyncIterable<T>;
  batch(items: Iterable<BatchItem>, options?: CallOptions): Promise<BatchResponse[]>;
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
  url: string | URL,
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

"""WebSocketRpcClient: the client side, on the native codec by default or on ``websockets``.

``transport="native"`` (the default) reads and writes frames with the codec of
``_speedups`` over an asyncio protocol (:mod:`fastwsrpc.native`; the opening
handshake is ``websockets``' sans-I/O ``ClientProtocol``); ``transport="websockets"``
uses a ``websockets`` connection (:class:`WebsocketsTransport`). The native
transport implements the ``websockets.connect`` keywords that make sense
without extensions (headers, subprotocols, timeouts, pings, ``ssl`` and the
socket options) and ``compression`` (permessage-deflate, see
docs/guide/compression.md); any other one (``proxy``, ``extensions``...)
switches that client to the ``websockets`` transport, so nothing that worked
before stops working.

Accepts both generations of ``fastapi-ws-rpc`` arguments: the 1.2 config
objects (``config=WebSocketRpcClientConfig(...)``) and the keyword arguments of
the project page (``retry_config=``, ``default_response_timeout=``,
``keep_alive=``, ``max_consecutive_ping_failures=``, ``ssl=`` and any other
``websockets.connect`` keyword). Explicit keywords win over the config object.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import socket as _socket
import ssl as _ssl
from dataclasses import replace
from functools import partial
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Type,
    Union,
)

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI
from websockets.protocol import State

from .channel import (
    BatchCall,
    OnConnectCallback,
    OnDisconnectCallback,
    OnErrorCallback,
    Params,
    RpcCaller,
    RpcChannel,
)
from .config import (
    RpcKeepaliveConfig,
    RpcRetryConfig,
    RpcSettings,
    WebSocketRpcClientConfig,
)
from .errors import (
    RemoteValueError,
    RpcChannelClosedError,
    RpcConnectionError,
    RpcHandshakeRejectedError,
    RpcInvalidStateError,
    RpcNotConnectedError,
    RpcTimeoutError,
    RpcUsageError,
)
from .interceptors import (
    FEATURES_HEADER,
    RpcInterceptor,
    features_of,
    format_features,
    parse_features,
    parse_max_pending,
)
from .logger import get_logger
from .methods import RpcMethodsBase
from .native import NATIVE_CONNECT_KWARGS, NativeWebSocket, connect_native
from .outgoing import _DEFAULT, DEFAULT_STREAM_BUFFER
from .protocol import Response
from .retry import backoff_retrying
from .sender import WRITE_HIGH_WATER, CoalescingSender
from .sessions import IDEMPOTENT_PREFIX, SESSION_HEADER
from .streams import RpcStream
from .topics import HISTORY_UNAVAILABLE, REASON_NEW, TopicEvent
from .transport import CLOSE_NORMAL, TransportClosed

if TYPE_CHECKING:
    import tenacity

logger = get_logger("client")


def _closed(exc: ConnectionClosed) -> TransportClosed:
    frame = exc.rcvd or exc.sent
    return TransportClosed(frame.code if frame else 1006, frame.reason if frame else "")


def _write_frame(ws: ClientConnection, data: bytes) -> None:
    _write_frames(ws, (data,))


def _write_frames(ws: ClientConnection, frames: Sequence[bytes]) -> None:
    """Frame ``frames`` with websockets' sans-I/O protocol (masking) and write them at once."""
    protocol = ws.protocol
    if protocol.state is not State.OPEN:
        return  # closing: the reader reports the close; senders see it next time
    for data in frames:
        protocol.send_text(data)
    chunks = protocol.data_to_send()
    if all(chunks):
        ws.transport.write(b"".join(chunks))
    else:  # an empty chunk asks for a half-close: let websockets handle it
        for chunk in chunks:
            if chunk:
                ws.transport.write(chunk)
        ws.send_data()


class WebsocketsTransport:
    """A ``websockets`` client connection as a :class:`~fastwsrpc.transport.Transport`.

    Outgoing frames are coalesced by the :class:`~fastwsrpc.sender.CoalescingSender`
    of the native transport (see :mod:`fastwsrpc.sender` for its rules); a batch
    goes through websockets' sans-I/O protocol (framing, masking) and out in a
    single ``transport.write``, with no async context manager per message. The
    socket's flow control is websockets' own: a sender waits in ``ws.drain()``
    while the write buffer is over :data:`~fastwsrpc.sender.WRITE_HIGH_WATER`.
    """

    __slots__ = ("_protocol", "_sender", "_transport", "ws")

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._protocol = ws.protocol
        self._transport = ws.transport
        # 256 frames a batch, as this transport always had: the rule of 32 was measured on the native path only.
        # The writers hold the connection, not this object: no reference cycle through the sender.
        self._sender = CoalescingSender(
            partial(_write_frame, ws),
            asyncio.get_running_loop(),
            write_batch=partial(_write_frames, ws),
            max_frames=256,
        )

    async def send(self, data: bytes) -> None:
        """Queue one frame for the next coalesced write; waits while the socket buffer is over its mark."""
        if self._protocol.state is not State.OPEN:
            raise TransportClosed(self.ws.close_code or 1006, self.ws.close_reason or "")
        self._sender.send(data)
        if self._transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            try:
                await self.ws.drain()
            except ConnectionClosed as exc:
                raise _closed(exc) from exc

    async def receive(self) -> Union[str, bytes]:
        """The next whole message (text stays UTF-8 bytes); TransportClosed when the connection ends."""
        try:
            # decode=False: text frames stay UTF-8 bytes; msgspec parses them as they are.
            return await self.ws.recv(decode=False)
        except ConnectionClosed as exc:
            self._release()  # recv raises it once the connection is lost
            raise _closed(exc) from exc

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Flush what is queued, then close with a closing handshake."""
        self._sender.flush()
        await self.ws.close(code, reason)  # returns once the connection is lost (or aborted)
        self._release()

    def _release(self) -> None:
        """The connection is over. Python < 3.11's SSL transport does not count itself
        closed when the peer ended it, and warns (ResourceWarning) when collected."""
        if not self._transport.is_closing():
            self._transport.close()

    def abort(self) -> None:
        """Drop the TCP connection at once: a stalled peer would never finish a handshake."""
        self._transport.abort()

    @property
    def peer(self) -> str:
        """``host:port`` of the server, for log lines."""
        address = self.ws.remote_address
        return f"{address[0]}:{address[1]}" if address else ""

    def receiving(self) -> bool:
        # The sans-I/O protocol keeps the bytes of a frame not yet complete.
        """Whether part of a frame has arrived and the rest has not (slowloris watch)."""
        return bool(self._protocol.reader.buffer)


#: Close codes after which ``auto_reconnect`` does not come back (as fastapi-ws-rpc
#: 1.2): the server said the client is wrong (protocol error, unsupported or
#: invalid data, policy violation) or broken (internal error): retrying would
#: only repeat it. 4000: a newer connection under the same client id replaced
#: this one (``fastwsrpc.cluster``); coming back would replace it in turn.
NO_RECONNECT_CODES = frozenset({1002, 1003, 1007, 1008, 1011, 4000})

#: The transport of clients that name none: ``"native"`` (a test run may switch it to ``"websockets"``).
DEFAULT_TRANSPORT = "native"


def _server_closed_first(ws: Union[ClientConnection, NativeWebSocket]) -> bool:
    """Whether the server started the closing handshake (its close code then says whether to come back)."""
    if isinstance(ws, NativeWebSocket):
        return ws.close_rcvd_then_sent
    return bool(ws.protocol.close_rcvd_then_sent)


def _is_transient(exc: BaseException) -> bool:
    """Whether a failed connect is worth another try.

    Refusals are final: an HTTP 4xx at the handshake (authentication, wrong
    path) other than 429, a malformed URI, a TLS verification failure.
    """
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        return status >= 500 or status == 429
    if isinstance(exc, (InvalidURI, _ssl.SSLError, ValueError, TypeError)):
        return False
    return isinstance(exc, (OSError, asyncio.TimeoutError, websockets.exceptions.InvalidHandshake, EOFError))


def _connection_error(exc: BaseException, uri: str) -> BaseException:
    """What a failed connect means, in our own exceptions (the cause stays chained)."""
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        what = {
            401: "authentication required",
            403: "not authorised, or no endpoint at this path",
            404: "no endpoint at this path",
            503: "the server is draining or unavailable; try another",
        }.get(status, "refused")
        return RpcHandshakeRejectedError(
            status, f"{uri}: the server refused the WebSocket handshake with HTTP {status} ({what})", exc.response
        )
    if isinstance(exc, InvalidURI):
        return RpcUsageError(f"{uri!r} is not a WebSocket URL: use ws://host:port/path or wss://...")
    if isinstance(exc, _socket.gaierror):
        return RpcConnectionError(f"{uri}: could not resolve the host name ({exc.strerror or exc})")
    if isinstance(exc, ConnectionRefusedError) or (isinstance(exc, OSError) and "Connect call failed" in str(exc)):
        return RpcConnectionError(f"{uri}: connection refused (is the server running?)")
    if isinstance(exc, _ssl.SSLError):
        return RpcConnectionError(f"{uri}: TLS failed: {exc}")
    if isinstance(exc, asyncio.TimeoutError):
        return RpcConnectionError(f"{uri}: timed out while opening the connection")
    if isinstance(exc, (OSError, websockets.exceptions.InvalidHandshake, EOFError)):
        return RpcConnectionError(f"{uri}: could not connect: {exc}")
    return exc


def _check_uri(uri: str) -> None:
    if isinstance(uri, str) and uri.startswith(("http://", "https://")):
        fixed = "ws" + uri[4:]
        raise RpcUsageError(
            f"{uri!r} is an HTTP URL: a WebSocket URL starts with ws:// or wss:// (did you mean {fixed!r}?)"
        )
    if not isinstance(uri, str) or not uri.startswith(("ws://", "wss://")):
        raise RpcUsageError(f"{uri!r} is not a WebSocket URL: use ws://host:port/path or wss://host/path")


#: Keyword arguments the client hands to ``websockets.connect`` (its own and
#: asyncio's ``create_connection``'s); anything else is a mistake, refused at once.
_CONNECT_KWARGS: FrozenSet[str] = frozenset(
    name
    for name, p in inspect.signature(connect).parameters.items()
    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name != "uri"
) | frozenset(
    {"ssl", "sock", "server_hostname", "local_addr", "family", "proto", "flags", "happy_eyeballs_delay"}
    | {"interleave", "ssl_handshake_timeout", "ssl_shutdown_timeout", "all_errors", "host", "port"}
)


def _log_retry(uri: str, attempts: int) -> Callable[[tenacity.RetryCallState], None]:
    """One WARNING per retry, so a client waiting on a dead server says so."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        cause = outcome.exception() if outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        logger.warning(
            "connect to %s failed (attempt %d of %d): %s; retrying in %.2f s",
            uri,
            state.attempt_number,
            attempts,
            _connection_error(cause, uri) if cause is not None else "?",
            delay,
        )

    return before_sleep


def _connect_retrying(
    uri: str, attempts: int, min_wait: float, max_wait: float, jitter: bool, sleep: Callable[[float], Awaitable[None]]
) -> tenacity.AsyncRetrying:
    """Connect attempts: transient failures (see :func:`_is_transient`) retried with backoff, each logged."""
    return backoff_retrying(
        max_attempts=attempts,
        min_wait=min_wait,
        max_wait=max_wait,
        jitter=jitter,
        transient=_is_transient,
        before_sleep=_log_retry(uri, attempts),
        sleep=sleep,
    )


def _retrying(
    retry: Union[RpcRetryConfig, Dict[str, Any], bool, None],
    uri: str = "",
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tenacity.AsyncRetrying:
    """The first connect's retrying, from any form of ``retry_config`` users pass."""
    if isinstance(retry, dict):  # the original library's form: tenacity's own kwargs
        import tenacity

        return tenacity.AsyncRetrying(**{"reraise": True, "sleep": sleep, **retry})
    if retry is False or retry is None or (isinstance(retry, RpcRetryConfig) and not retry.enabled):
        return _connect_retrying(uri, 1, 0.0, 0.0, False, sleep)
    cfg = retry if isinstance(retry, RpcRetryConfig) else RpcRetryConfig()
    return _connect_retrying(uri, cfg.max_attempts, cfg.min_wait, cfg.max_wait, cfg.jitter, sleep)


class WebSocketRpcClient:
    """Connects to a WebSocket RPC endpoint; use it as ``async with``.

    ``client.other.method(**kw)`` calls the server; ``methods`` is what the
    server may call back.

    :param uri: The server's WebSocket URL (``ws://host:port/path`` or ``wss://...``),
        or a list of them: after a failed connect attempt, and to reconnect, the
        client moves on to the next one (another node of the service). Anything
        else is refused here with ``RpcUsageError``.
    :param methods: What the server may call on this client: an instance of an
        ``RpcMethodsBase`` subclass. ``None``: an ``RpcMethodsBase()``, which answers
        only ``ping``.
    :param config: A ``WebSocketRpcClientConfig`` (fastapi-ws-rpc 1.2's form): the
        connection, backpressure, keepalive, retry and websocket settings in one
        object; the keywords below win over it. Any other value here is taken as
        ``retry_config``, which the older fastapi-ws-rpc took third. ``None``: the
        defaults.
    :param on_connect: Async callbacks ``cb(channel)``, run on every connection
        (the first and each reconnect) once its read loop is going, so they may
        call the server. They run in the background unless
        ``await_connect_callbacks``; one that raises is logged and skipped.
    :param on_disconnect: Async callbacks ``cb(channel)``, run once each time a
        connection ends.
    :param on_error: Async callbacks ``cb(channel, exc)``, run when one of this
        client's methods raises an unexpected exception while the server calls it
        (the server gets -32603).
    :param serializing_socket_cls: Accepted for fastapi-ws-rpc compatibility and
        ignored, with a warning: fastwsrpc always speaks JSON-RPC 2.0 in JSON.
    :param retry_config: How the first connect retries a transient failure (refused
        connection, timeout, HTTP 5xx or 429); a refusal (HTTP 401, 403, 404, a bad
        URL, a failed TLS verification) is never retried. An ``RpcRetryConfig``
        (default: ``config.retry``, 10 attempts, waits growing from 0.1 s to at most
        60 s, with jitter), a ``dict`` of ``tenacity.AsyncRetrying`` keywords (the
        original library's form), or ``False`` / ``None``: one attempt. With an
        ``RpcRetryConfig`` each retry logs a WARNING.
    :param default_response_timeout: Seconds a call waits for its answer when it
        gives no ``timeout`` (then ``RpcTimeoutError``). ``None``: from ``config``
        (default: no timeout).
    :param keep_alive: Seconds between keepalive pings (WebSocket pings; an RPC
        ``ping`` call with ``RpcKeepaliveConfig(use_protocol_ping=False)``), each
        to be answered within the same time. ``None``: from ``config`` (default 0:
        off). The transport's own pings (``ping_interval``, below) are separate.
    :param max_consecutive_ping_failures: Keepalive pings missed in a row after
        which the connection is dropped without a closing handshake (pending calls
        fail; with ``auto_reconnect`` the client reconnects). ``None``: from
        ``config`` (default 3).
    :param max_message_size: Largest frame accepted from the server, in bytes
        (default 10 MB); a larger one closes the connection with 1009.
    :param max_pending_requests: The server's calls to this client running at once
        (default 1000), and the most of this client's own calls in flight: past it,
        or past the limit the server advertises, calls wait locally, in order.
    :param max_queued_calls: This client's calls that may wait locally for room
        under that limit (default 10,000); past it a call fails at once with
        ``RpcBackpressureError``.
    :param max_connection_duration: Seconds after which the connection is closed
        (code 1000); with ``auto_reconnect`` the client connects again. ``None``:
        from ``config`` (default: no limit).
    :param auto_reconnect: ``True``: when the connection drops, connect again
        (after ``reconnect_delay``, up to ``max_reconnect_attempts`` tries), except
        after a close by the server with 1002, 1003, 1007, 1008, 1011 or 4000
        (``NO_RECONNECT_CODES``). Calls made while disconnected fail at once with
        ``RpcNotConnectedError``. ``None``: from ``config`` (default ``False``).
    :param reconnect_delay: Seconds before the first reconnect attempt (default
        5; with several URLs, a random delay up to it); later attempts back off 2x
        each time, up to ``config.retry.max_wait`` (60 s).
    :param max_reconnect_attempts: Attempts per lost connection before the client
        gives up (default 10); ``client.last_error`` then says why.
    :param raise_on_error: ``True`` (default): an error answer raises (a
        ``RemoteValueError`` subclass per JSON-RPC code). ``False``: the call returns
        the ``Response`` with ``.error`` set, as fastapi-ws-rpc 1.2 did.
    :param await_connect_callbacks: ``True``: ``async with`` enters only once the
        ``on_connect`` callbacks have finished, as in fastapi-ws-rpc 1.2. ``False``
        (default): they run in the background.
    :param interceptors: Interceptors (``RpcInterceptor``) run around every call both ways, the
        first outermost (for example ``fastwsrpc.otel.OpenTelemetryInterceptor()``).
        Default: none.
    :param transport: ``"native"`` (default): fastwsrpc's own frame codec;
        ``"websockets"``: a ``websockets`` connection. A keyword only ``websockets``
        implements (``extensions``, for one) selects ``"websockets"`` by
        itself. Any other value is an ``RpcUsageError``.
    :param idempotent_methods: Names of server methods whose calls are idempotent by
        default: with ``auto_reconnect``, a call whose answer was lost with the
        connection is sent again on the next one under the same id, and a server
        with sessions runs it once (see ``call(..., idempotent=True)``).
    :param session: Ask the server for a session, so that a reconnect within the
        server's ``session_ttl`` resumes it. ``None`` (default): only with
        ``auto_reconnect``.
    :param kwargs: Options for the connection, as ``websockets.connect`` takes
        them: ``ssl``, ``additional_headers`` (``extra_headers``, the older name, is
        accepted), ``open_timeout`` (10 s), ``ping_interval`` / ``ping_timeout``
        (20 s each; the transport's WebSocket pings), ``close_timeout``,
        ``subprotocols``, ``compression``, any other ``websockets.connect`` keyword,
        and the socket options of ``asyncio``'s ``create_connection``. Any other
        name is a ``TypeError``.
    """

    def __init__(
        self,
        uri: Union[str, Sequence[str]],
        methods: Optional[RpcMethodsBase] = None,
        config: Any = None,
        on_connect: Optional[List[OnConnectCallback]] = None,
        on_disconnect: Optional[List[OnDisconnectCallback]] = None,
        on_error: Optional[List[OnErrorCallback]] = None,
        serializing_socket_cls: Any = None,
        *,
        retry_config: Any = _DEFAULT,
        default_response_timeout: Optional[float] = None,
        keep_alive: Optional[float] = None,
        max_consecutive_ping_failures: Optional[int] = None,
        max_message_size: Optional[int] = None,
        max_pending_requests: Optional[int] = None,
        max_queued_calls: Optional[int] = None,
        max_connection_duration: Optional[float] = None,
        auto_reconnect: Optional[bool] = None,
        reconnect_delay: Optional[float] = None,
        max_reconnect_attempts: Optional[int] = None,
        raise_on_error: bool = True,
        await_connect_callbacks: bool = False,
        interceptors: Sequence[RpcInterceptor] = (),
        transport: Optional[str] = None,
        idempotent_methods: Iterable[str] = (),
        session: Optional[bool] = None,
        **kwargs: Any,
    ) -> None:
        # The original library's third positional argument was retry_config.
        if config is not None and not isinstance(config, WebSocketRpcClientConfig):
            if retry_config is _DEFAULT:
                retry_config = config
            config = None
        cfg = config or WebSocketRpcClientConfig()
        connection = cfg.connection
        if auto_reconnect is not None:
            connection = replace(connection, auto_reconnect=auto_reconnect)
        if reconnect_delay is not None:
            connection = replace(connection, reconnect_delay=reconnect_delay)
        if max_reconnect_attempts is not None:
            connection = replace(connection, max_reconnect_attempts=max_reconnect_attempts)
        if default_response_timeout is not None or max_connection_duration is not None:
            connection = replace(
                connection,
                default_response_timeout=(
                    connection.default_response_timeout
                    if default_response_timeout is None
                    else default_response_timeout
                ),
                max_connection_duration=(
                    connection.max_connection_duration if max_connection_duration is None else max_connection_duration
                ),
            )
        backpressure = cfg.backpressure
        if max_message_size is not None or max_pending_requests is not None or max_queued_calls is not None:
            backpressure = replace(
                backpressure,
                max_pending_requests=max_pending_requests or backpressure.max_pending_requests,
                max_message_size=max_message_size or backpressure.max_message_size,
                max_queued_calls=backpressure.max_queued_calls if max_queued_calls is None else max_queued_calls,
            )
        keepalive = cfg.keepalive
        if keep_alive is not None or max_consecutive_ping_failures is not None:
            keepalive = RpcKeepaliveConfig(
                interval=keepalive.interval if keep_alive is None else keep_alive,
                max_consecutive_failures=max_consecutive_ping_failures or keepalive.max_consecutive_failures,
                use_protocol_ping=keepalive.use_protocol_ping,
            )
        self.config = replace(cfg, connection=connection, backpressure=backpressure, keepalive=keepalive)
        self.retry_config = self.config.retry if retry_config is _DEFAULT else retry_config
        self.methods = methods if methods is not None else RpcMethodsBase()
        self._on_connect = list(on_connect or ())
        self._on_disconnect = list(on_disconnect or ())
        self._on_error = list(on_error or ())
        if serializing_socket_cls is not None:
            logger.warning("serializing_socket_cls is ignored: fastwsrpc always speaks JSON-RPC 2.0 JSON")
        if "extra_headers" in kwargs:  # websockets' legacy name
            kwargs["additional_headers"] = kwargs.pop("extra_headers")
        for name in kwargs:
            if name not in _CONNECT_KWARGS:
                raise TypeError(
                    f"WebSocketRpcClient() got an unexpected keyword argument {name!r} "
                    "(neither a setting of ours nor a websockets.connect option)"
                )
        uris = [uri] if isinstance(uri, str) else list(uri)
        if not uris:
            raise RpcUsageError("WebSocketRpcClient() needs a URL (or a list of them, tried in turn)")
        for one in uris:
            _check_uri(one)
        #: The URLs to connect to, in turn: a reconnect goes to the next one (another node of the service).
        self.uris: List[str] = uris
        #: The URL of the current (or next) connection.
        self.uri: str = uris[0]
        #: Methods whose calls are idempotent by default: re-sent after a reconnect, run once (see ``call``).
        self.idempotent_methods: FrozenSet[str] = frozenset(idempotent_methods)
        #: Whether to ask the server for a session (default: with ``auto_reconnect``): see docs/guide/sessions.md.
        self.use_session = self.config.connection.auto_reconnect if session is None else session
        #: The session the server gave us, if any, and whether the last connection resumed it.
        self.session_id: Optional[str] = None
        self.session_resumed = False
        self._idempotent_count = 0
        transport = transport or DEFAULT_TRANSPORT
        if transport not in ("native", "websockets"):
            raise RpcUsageError(f"transport must be 'native' or 'websockets', not {transport!r}")
        #: ``"native"`` (the frame codec of ``_speedups``) or ``"websockets"``.
        self.transport = transport
        #: Everything the connection's channel obeys, resolved once here.
        self.settings = RpcSettings.resolve(
            connection=self.config.connection,
            backpressure=self.config.backpressure,
            owner="WebSocketRpcClient",
            raise_on_error=None if raise_on_error else False,
        )
        #: fastapi-ws-rpc 1.2 parity: ``async with`` enters only once the
        #: ``on_connect`` callbacks have finished (they run with the read loop
        #: going, so they may call the server).
        self.await_connect_callbacks = await_connect_callbacks
        self.connect_kwargs: Dict[str, Any] = {**self.config.websocket_kwargs, **kwargs}
        self.ws: Optional[Union[ClientConnection, NativeWebSocket]] = None
        self.channel: Optional[RpcChannel] = None
        self._reader_task: Optional[asyncio.Task[None]] = None
        self._closing = False
        self._connected: Optional[asyncio.Event] = None  # made in the loop that connects
        #: How many times the connection was re-established (``auto_reconnect``).
        self.reconnects = 0
        #: Why the last reconnect gave up, if it did.
        self.last_error: Optional[BaseException] = None
        #: How the client waits between reconnect attempts (a test can make it instant).
        self._sleep: Any = asyncio.sleep
        self._reconnecting = False
        #: Wrap every call both ways, the first outermost (see :mod:`fastwsrpc.interceptors`).
        self.interceptors = tuple(interceptors)
        self._features = features_of(self.interceptors)
        self._caller: Optional[RpcCaller] = None

    # ------------------------------------------------------------ connect
    def _websockets_kwargs(self) -> Dict[str, Any]:
        ws_cfg = self.config.websocket
        options: Dict[str, Any] = {
            "max_size": self.config.backpressure.max_message_size,
            "compression": "deflate" if ws_cfg.compression else None,
        }
        if ws_cfg.subprotocols:
            options["subprotocols"] = list(ws_cfg.subprotocols)
        if ws_cfg.ping_timeout is not None:
            options["ping_timeout"] = ws_cfg.ping_timeout
        options.update(self.connect_kwargs)
        if self._features or self.use_session:
            headers = Headers(options.get("additional_headers") or {})
            if self._features:
                # Offer what our interceptors need (say "meta" for trace context); the server echoes what it shares.
                headers[FEATURES_HEADER] = format_features(self._features)
            if self.use_session:
                headers[SESSION_HEADER] = self.session_id or "new"
            options["additional_headers"] = headers
        return options

    def _next_uri(self) -> None:
        """Move on to the next URL of the list (another node): after a failed connect, or to reconnect."""
        if len(self.uris) > 1:
            self.uri = self.uris[(self.uris.index(self.uri) + 1) % len(self.uris)]

    async def _open(self, retrying: Optional[tenacity.AsyncRetrying] = None) -> RpcChannel:
        """Connect (retrying transient failures with tenacity) and build the channel.

        Failures come out as our own exceptions (RpcHandshakeRejectedError,
        RpcConnectionError, RpcUsageError) with the original chained.
        """
        options = self._websockets_kwargs()
        native = self._uses_native(options)
        ws: Optional[Union[ClientConnection, NativeWebSocket]] = None
        try:
            async for attempt in retrying or _retrying(self.retry_config, self.uri, self._sleep):
                with attempt:
                    try:
                        ws = await (connect_native(self.uri, **options) if native else connect(self.uri, **options))
                    except Exception as exc:
                        if _is_transient(exc):
                            self._next_uri()  # the next attempt tries the next node
                        raise
        except Exception as exc:
            mapped = _connection_error(exc, self.uri)
            if mapped is exc:
                raise
            raise mapped from exc
        assert ws is not None
        self.ws = ws
        agreed: FrozenSet[str] = frozenset()
        peer_max_pending: Optional[int] = None
        response = getattr(ws, "response", None)  # the server's handshake answer, on either transport
        if response is not None:
            advertised = response.headers.get(FEATURES_HEADER)
            agreed = self._features & parse_features(advertised)
            peer_max_pending = parse_max_pending(advertised)
            self._take_session(response.headers.get(SESSION_HEADER))
        channel = RpcChannel(
            self.methods,
            ws if isinstance(ws, NativeWebSocket) else WebsocketsTransport(ws),
            settings=self.settings,
            subprotocol=ws.subprotocol,
            connect_callbacks=self._on_connect,
            disconnect_callbacks=self._on_disconnect,
            error_callbacks=self._on_error,
            interceptors=self.interceptors,
            peer_features=agreed,
            peer_max_pending=peer_max_pending,
        )
        self.channel = channel
        if self._connected is not None:
            self._connected.set()
        return channel

    def _take_session(self, value: Optional[str]) -> None:
        """The server's answer to our session request: ``<id>; resumed=<0|1>`` (none: it keeps no sessions)."""
        if not self.use_session:
            return
        if not value:
            self.session_id, self.session_resumed = None, False
            return
        session_id, _, rest = value.partition(";")
        self.session_id = session_id.strip()
        self.session_resumed = rest.strip() == "resumed=1"
        if not self.session_resumed and self.reconnects:
            logger.info(
                "%s: a new session (the old one was not kept): idempotent calls in flight are sent again", self.uri
            )

    def _uses_native(self, options: Dict[str, Any]) -> bool:
        """The native transport, unless asked otherwise or given an option only ``websockets`` has."""
        if self.transport != "native":
            return False
        unsupported = sorted(name for name in options if name not in NATIVE_CONNECT_KWARGS)
        if unsupported:
            logger.debug("%s: using the websockets transport for %s", self.uri, ", ".join(unsupported))
            return False
        return True

    async def __connect__(self) -> WebSocketRpcClient:
        """Open the connection; with ``auto_reconnect``, keep it open until ``close()``."""
        self._closing = False
        if self._connected is None:
            self._connected = asyncio.Event()
        channel = await self._open()
        await channel.on_connect()
        self._reader_task = asyncio.get_running_loop().create_task(self._serve(channel, True))
        if self.await_connect_callbacks:
            await channel.wait_connect_callbacks()
        return self

    async def _serve(self, channel: RpcChannel, started: bool = False) -> None:
        """Run connection after connection: read, keep alive, and reconnect when allowed."""
        while True:
            keepalive = None
            if self.config.keepalive.enabled:
                keepalive = asyncio.get_running_loop().create_task(self._keepalive(channel))
            try:
                if not started:
                    await channel.on_connect()
                started = False
                await channel.run()
            finally:
                if keepalive is not None:
                    keepalive.cancel()
                if self._connected is not None:
                    self._connected.clear()
            if self._closing or not self.config.connection.auto_reconnect:
                return
            ws = self.ws
            code = ws.close_code if ws is not None else None
            server_closed = ws is not None and _server_closed_first(ws)
            if server_closed and code in NO_RECONNECT_CODES:
                logger.warning(
                    "connection to %s closed with code %s (%s): not reconnecting", self.uri, code, channel.close_reason
                )
                return
            connection = self.config.connection
            lost = self.uri
            self._next_uri()
            # Full jitter: after a drain (1012) or a crash, every client of a node comes back; spread them out.
            delay = (
                random.uniform(0.0, connection.reconnect_delay) if len(self.uris) > 1 else connection.reconnect_delay
            )
            logger.warning(
                "connection to %s lost (%s); reconnecting to %s in %.2f s",
                lost,
                channel.close_reason,
                self.uri,
                delay,
            )
            self._reconnecting = True
            try:
                await self._sleep(delay)
                if self._closing:
                    return
                channel = await self._open(self._reconnect_retrying())
            except Exception as exc:
                logger.error("could not reconnect to %s: %s; giving up", self.uri, exc)
                self.last_error = exc
                return
            finally:
                self._reconnecting = False
            self.reconnects += 1

    def _reconnect_retrying(self) -> tenacity.AsyncRetrying:
        """``max_reconnect_attempts`` tries, backing off from ``reconnect_delay`` up to ``retry.max_wait``."""
        connection = self.config.connection
        delay = connection.reconnect_delay
        return _connect_retrying(
            self.uri,
            connection.max_reconnect_attempts,
            2 * delay,  # after the first wait: 2d, 4d, ... as in 1.2
            max(self.config.retry.max_wait, delay),
            self.config.retry.jitter,
            self._sleep,
        )

    async def __aenter__(self) -> WebSocketRpcClient:
        return await self.__connect__()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection for good; pending calls fail with RpcChannelClosedError."""
        self._closing = True
        if self.channel is not None:
            await self.channel.close()
        if self._reader_task is not None and self._reconnecting:
            self._reader_task.cancel()  # between connections: nothing to wait for
        if self._reader_task is not None:
            if asyncio.current_task() is not self._reader_task:
                reader = self._reader_task
                try:
                    await asyncio.wait_for(asyncio.shield(reader), 10)
                except asyncio.CancelledError:
                    if not reader.cancelled():  # we are cancelled, not the reader: stop it, and go on being cancelled
                        reader.cancel()
                        raise
                except (asyncio.TimeoutError, Exception):
                    reader.cancel()

    async def wait_connected(self, timeout: Optional[float] = None) -> None:
        """Wait until a connection is open (after a reconnect, say); raises TimeoutError.

        Returns only for a live connection: right after a connection died, the
        client is not connected, even before the reconnect loop has noticed.
        """
        connected = self._connected
        if connected is None:
            raise RpcInvalidStateError("the client was never connected: use 'async with' first")

        async def live() -> None:
            while not self.is_connected:
                connected.clear()  # a stale "connected": that channel has closed since
                await connected.wait()

        await asyncio.wait_for(live(), timeout)

    # ----------------------------------------------------------- keepalive
    async def _keepalive(self, channel: RpcChannel) -> None:
        """Ping every ``interval``; close after ``max_failures`` misses in a row.

        Protocol pings (``use_protocol_ping``) check the socket; RPC pings
        (the peer's ``ping`` method) check the whole path, handlers included.
        """
        cfg = self.config.keepalive
        ws = self.ws
        assert ws is not None
        failures = 0
        while not channel.is_closed():
            await asyncio.sleep(cfg.interval)
            try:
                if cfg.use_protocol_ping:
                    pong = await ws.ping()
                    await asyncio.wait_for(pong, cfg.interval)
                else:
                    await channel.call("ping", timeout=cfg.interval)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                logger.warning("keepalive ping %d/%d failed: %r", failures, cfg.max_consecutive_failures, exc)
                if failures >= cfg.max_consecutive_failures:
                    # The socket may be stalled: do not wait for a closing handshake.
                    channel.abort("keepalive failed")
                    return

    # ------------------------------------------------------------- calls
    def _require_channel(self) -> RpcChannel:
        if self.channel is None:
            raise RpcInvalidStateError(
                "the client is not connected: use 'async with WebSocketRpcClient(...) as client:' "
                "(or await client.__connect__()) before calling"
            )
        return self.channel

    @property
    def other(self) -> RpcCaller:
        """Proxy of the server's methods: ``await client.other.add(a=1, b=2)``."""
        self._require_channel()
        caller = self._caller
        if caller is None:
            caller = self._caller = RpcCaller(self)
        return caller

    @property
    def id(self) -> str:
        """The current connection's channel id (``""`` when not connected)."""
        return self.channel.id if self.channel is not None else ""

    def call(
        self, name: str, args: Params = None, timeout: Any = _DEFAULT, *, idempotent: Optional[bool] = None
    ) -> Awaitable[Response]:
        """Call ``name`` on the server and wait for its answer (see :meth:`RpcChannel.call`).

        ``idempotent=True`` (or ``name`` in ``idempotent_methods``): safe to run
        twice, so if the connection drops before the answer arrives, the call
        is sent again on the next connection (with ``auto_reconnect``), under
        the same id; with a session (see docs/guide/sessions.md) the server runs
        it once and answers the repeat from its record. ``timeout`` covers the
        whole, reconnects included. Other calls in flight fail with
        ``RpcChannelClosedError`` when the connection drops.
        """
        if idempotent or (idempotent is None and name in self.idempotent_methods):
            return self._call_idempotent(name, args, timeout)
        return self._require_channel().call(name, args, timeout)

    async def _call_idempotent(self, name: str, args: Params, timeout: Any) -> Response:
        self._idempotent_count += 1
        call_id = f"{IDEMPOTENT_PREFIX}{self._idempotent_count}"
        channel = self._require_channel()
        if timeout is _DEFAULT:
            timeout = channel.default_response_timeout
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            channel = self._require_channel()
            left = None if deadline is None else max(0.001, deadline - loop.time())
            try:
                return await channel.call(name, args, left, call_id=call_id)
            except (RpcChannelClosedError, RpcNotConnectedError):
                if self._closing or not self.config.connection.auto_reconnect or self._reader_task is None:
                    raise
                if self._reader_task.done():
                    raise  # the reconnect loop gave up
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    raise RpcTimeoutError(f"no answer to {name!r} within {timeout} s (reconnecting)") from None
                try:
                    await self.wait_connected(left)
                except asyncio.TimeoutError:
                    raise RpcTimeoutError(f"no answer to {name!r} within {timeout} s (reconnecting)") from None

    def stream(
        self,
        name: str,
        args: Params = None,
        *,
        buffer: int = DEFAULT_STREAM_BUFFER,
        timeout: Optional[float] = None,
        result_type: Optional[Type[Any]] = None,
    ) -> RpcStream:
        """Consume the server's stream method ``name`` (``async for``; see :meth:`RpcChannel.stream`).

        With a session (``auto_reconnect=True`` and a server that keeps
        sessions), the stream outlives the connection: after a reconnect it
        goes on where it was, nothing lost or repeated; if the server could not
        keep it, the iteration fails with ``RpcChannelClosedError`` rather than
        skip or repeat items (see docs/guide/sessions.md).
        """
        stream = self._require_channel().stream(name, args, buffer=buffer, timeout=timeout, result_type=result_type)
        if self.session_id is not None and self.config.connection.auto_reconnect:
            self._idempotent_count += 1
            stream.id = f"{IDEMPOTENT_PREFIX}{self._idempotent_count}"
            stream.reconnect = self._streams_after_reconnect
        return stream

    async def _streams_after_reconnect(self) -> Any:
        """For a durable stream whose connection dropped: the next connection's stream registry (None: no next)."""
        if not _can_come_back(self):
            return None
        await self.wait_connected()
        return self._require_channel()._streams

    def subscribe(
        self, *topics: str, on_slow: Optional[str] = None, buffer: int = 16, since: Optional[Mapping[str, Any]] = None
    ) -> Subscription:
        """Events published on ``topics`` (``async for event in client.subscribe("prices.btc")``).

        Each event is a :class:`~fastwsrpc.topics.TopicEvent` (``topic``, ``data``,
        ``dropped``, and with the server's topic history ``epoch`` and ``offset``);
        ``on_slow`` asks for a policy when we cannot keep up (``"disconnect"``,
        ``"drop_oldest"``, ``"drop_new"``; default: the server's). With
        ``auto_reconnect`` the subscription survives reconnects: it subscribes
        again from the last event it saw, and the server replays what was
        missed (``subscription.recovered``), or says it cannot with a notice
        event (``event.is_notice``, ``event.recovered`` False, ``event.reason``),
        never a silent hole. ``since``: ``{topic: (epoch, offset)}`` to start
        after a position you kept.
        """
        self._require_channel()
        return Subscription(self, topics, on_slow, buffer, since)

    async def notify(self, name: str, args: Params = None) -> None:
        """Send a notification to the server; it is never answered."""
        await self._require_channel().notify(name, args)

    async def call_batch(self, calls: Iterable[BatchCall], timeout: Any = _DEFAULT) -> List[Response]:
        """Send several calls in one frame; their responses in order (see :meth:`RpcChannel.call_batch`)."""
        channel = self._require_channel()
        if timeout is _DEFAULT:
            return await channel.call_batch(calls)
        return await channel.call_batch(calls, timeout=timeout)

    async def ping(self) -> Response:
        """Call the server's ``ping`` method (answers ``"pong"``): the whole path is alive."""
        return await self._require_channel().call("ping")

    async def wait_on_rpc_ready(self) -> None:
        """Kept for compatibility: the channel is ready as soon as ``__aenter__`` returns."""
        self._require_channel()

    async def wait_on_reader(self) -> None:
        """Wait until the connection ends."""
        reader = self._reader_task
        if reader is not None:
            try:
                await asyncio.shield(reader)
            except asyncio.CancelledError:
                if not reader.cancelled():
                    raise  # our caller was cancelled: that is not ours to swallow

    @property
    def is_connected(self) -> bool:
        """Whether a connection is open now (false between a loss and a reconnect)."""
        return self.channel is not None and not self.channel.is_closed()

    @property
    def pending_count(self) -> int:
        """Calls of ours waiting for an answer on the current connection."""
        return self.channel.pending_count if self.channel is not None else 0

    @property
    def close_code(self) -> Optional[int]:
        """The close code of the last connection, once it closed."""
        return self.ws.close_code if self.ws is not None else None

    @property
    def close_reason(self) -> Optional[str]:
        """The close reason of the last connection, once it closed."""
        return self.ws.close_reason if self.ws is not None else None


def _can_come_back(client: WebSocketRpcClient) -> bool:
    reader = client._reader_task
    return not client._closing and client.config.connection.auto_reconnect and reader is not None and not reader.done()


class Subscription:
    """A client's subscription to topics; with ``auto_reconnect``, it outlives its connections.

    Iterate it (``async for event in subscription``), or ``await open()`` then
    ``await next()``, as an :class:`~fastwsrpc.streams.RpcStream`. It keeps the
    position (``epoch``, ``offset``) of the last event per topic; after a
    reconnect it subscribes again from there and the server's topic history
    fills the gap: ``recovered`` is True when it did, False when it could not
    (a notice event comes first, saying why). See docs/guide/recovery.md.
    """

    def __init__(
        self,
        client: WebSocketRpcClient,
        topics: Sequence[str],
        on_slow: Optional[str],
        buffer: int,
        since: Optional[Mapping[str, Any]],
    ) -> None:
        self._client = client
        self.topics = tuple(topics)
        self._on_slow = on_slow
        self._buffer = buffer
        #: The last position seen, per topic: what a resubscription asks from.
        self.positions: Dict[str, Dict[str, Any]] = {}
        for topic, position in (since or {}).items():
            epoch, offset = position if isinstance(position, (tuple, list)) else (position["epoch"], position["offset"])
            self.positions[topic] = {"epoch": epoch, "offset": offset}
        #: After a resubscription: whether every topic's missed events were replayed (None before any).
        self.recovered: Optional[bool] = None
        #: How many times it subscribed again after a lost connection.
        self.resubscribes = 0
        self._stream: Optional[RpcStream] = None
        self._first = True
        self._given = frozenset(self.positions)  # topics the caller gave a since for: told from the start
        self._closed = False

    async def __aenter__(self) -> Subscription:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[TopicEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[TopicEvent]:
        try:
            while True:
                try:
                    event = await self.next()
                except StopAsyncIteration:
                    return
                yield event
        finally:
            await self.aclose()

    async def open(self) -> None:
        """Subscribe (once): nothing published after this returns is missed."""
        if self._stream is None and not self._closed:
            stream = self._client._require_channel().subscribe(
                *self.topics, on_slow=self._on_slow, buffer=self._buffer, since=self.positions
            )
            await stream.open()
            self._stream = stream

    async def next(self) -> TopicEvent:
        """The next event (a recovery notice only when events were lost); ``StopAsyncIteration`` at the end."""
        client = self._client
        while True:
            try:
                await self.open()
                if self._stream is None:
                    raise StopAsyncIteration
                event: TopicEvent = await self._stream.next()
            except (RpcChannelClosedError, RpcNotConnectedError):
                if self._closed or not self._can_come_back():
                    raise
                await self._resubscribe(client.wait_connected())
                continue
            except RemoteValueError as exc:
                if exc.code != HISTORY_UNAVAILABLE or self._closed:
                    raise
                # The broker cannot read the history now: ask again shortly.
                await self._resubscribe(client._sleep(client.config.connection.reconnect_delay))
                continue
            if event.epoch is not None and event.offset is not None:
                self.positions[event.topic] = {"epoch": event.epoch, "offset": event.offset}
            elif event.is_notice and event.offset == 0 and event.topic not in self.positions:
                # The topic had no publication yet: start "before its first" (see docs/guide/recovery.md).
                self.positions[event.topic] = {"epoch": None, "offset": 0}
            if not event.is_notice:
                return event
            if (self._first and event.topic not in self._given) or event.reason == REASON_NEW:
                continue  # where a subscription starts: nothing was missed
            if event.recovered:
                if self.recovered is None:
                    self.recovered = True
                continue
            self.recovered = False
            return event  # told, never given a silent hole

    def _can_come_back(self) -> bool:
        return _can_come_back(self._client)

    async def _resubscribe(self, wait: Awaitable[Any]) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()
        await wait
        self._first = False
        self.resubscribes += 1
        self.recovered = None

    async def aclose(self) -> None:
        """Stop the subscription (the server forgets it)."""
        self._closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()

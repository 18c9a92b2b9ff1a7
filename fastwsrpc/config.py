"""Configuration objects, with the names and defaults of ``fastapi-ws-rpc`` 1.x.

Where the 1.1 project page and the 1.2 package disagree, the page wins (it is
what users read): retries default to 10 attempts and 60 s between them, and the
keepalive config accepts ``max_failures`` as well as 1.2's
``max_consecutive_failures``.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Any, Dict, Iterable, List, Optional

DEFAULT_MAX_MESSAGE_SIZE = 10 * 1024 * 1024
DEFAULT_MAX_PENDING_REQUESTS = 1000
DEFAULT_MAX_SEND_QUEUE_SIZE = 1000
DEFAULT_MAX_BATCH_SIZE = 1000
#: Incoming messages that wait past ``max_pending_requests`` before calls are refused.
DEFAULT_MAX_QUEUED_REQUESTS = 1000
#: Bytes one connection may hold for its peer: work running or queued, answers unsent.
DEFAULT_MAX_CONNECTION_BYTES = 64 * 1024 * 1024
#: Our own calls that wait locally for room under the peer's limit.
DEFAULT_MAX_QUEUED_CALLS = 10_000
DEFAULT_MAX_DEPTH = 128
DEFAULT_PROMISE_TTL = 60.0
DEFAULT_RECEIVE_TIMEOUT = 60.0
DEFAULT_SEND_TIMEOUT = 60.0
JSONRPC_SUBPROTOCOL = "jsonrpc2.0"


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class RpcDebugConfig:
    """Whether error answers reveal exception details (off: they say "Internal error")."""

    debug_mode: bool = False

    def validate(self) -> None:
        """Nothing to check; present for symmetry with the other configs."""


@dataclass(frozen=True)
class WebSocketConnectionConfig:
    """WebSocket-level settings of the client.

    Compression is off by default, unlike ``fastapi-ws-rpc`` 1.2: on the links
    this library is built for (loopback, LAN, data centre), deflate costs more
    CPU and latency than it saves in bytes. Pass ``compression="deflate"`` to
    turn it on.
    """

    subprotocols: Optional[List[str]] = field(default_factory=lambda: [JSONRPC_SUBPROTOCOL])
    compression: Optional[str] = None
    #: Deprecated: does nothing (``websockets`` compresses every message once
    #: deflate is negotiated); setting it warns.
    compression_threshold: Optional[int] = None
    ping_timeout: Optional[float] = None

    def __post_init__(self) -> None:
        if self.compression_threshold is not None:
            warnings.warn(
                "compression_threshold does nothing and will be removed: with compression='deflate' "
                "every message is compressed",
                DeprecationWarning,
                stacklevel=3,
            )
        self.validate()

    def validate(self) -> None:
        """Raise ValueError for an unknown compression or a negative timeout."""
        _check(
            self.compression in (None, "deflate"),
            f"compression must be None or 'deflate', got {self.compression!r}",
        )
        _check(
            self.compression_threshold is None or self.compression_threshold >= 0, "compression_threshold must be >= 0"
        )
        _check(
            self.ping_timeout is None or self.ping_timeout >= 0,
            "ping_timeout must be >= 0 or None",
        )


#: Messages shorter than this go uncompressed on a compressed connection (see CompressionConfig).
DEFAULT_COMPRESSION_THRESHOLD = 1024
#: The windows a server allows when CompressionConfig leaves them to it (websockets' server default).
DEFAULT_SERVER_WINDOW_BITS = 12


@dataclass(frozen=True)
class CompressionConfig:
    """permessage-deflate (RFC 7692) on the native server and client; ``compression="deflate"`` is the defaults.

    The parameters are RFC 7692's, under its names (windows: 9 to 15 bits, zlib
    cannot deflate with 8):

    * on the server, caps and demands: it answers an offer with windows no
      larger than ``server_max_window_bits`` (``None``: 12) and, when the client
      allows it, ``client_max_window_bits`` (``None``: 12), and adds the
      ``*_no_context_takeover`` set here;
    * on the client, the offer: ``server_max_window_bits`` is asked for when
      set (``None``: the server picks), ``client_max_window_bits`` offered with
      its value (``None``: without one, the server picks), the
      ``*_no_context_takeover`` set here are asked for.

    ``threshold``: messages shorter than this many bytes are sent uncompressed
    (what the peer compresses is inflated whatever its size). ``level`` and
    ``mem_level``: zlib's, for our deflater. Memory per connection and the
    reasons for the defaults (websockets' own: 12-bit windows on the server,
    memLevel 5) are in docs/guide/compression.md.
    """

    threshold: int = DEFAULT_COMPRESSION_THRESHOLD
    server_max_window_bits: Optional[int] = None
    client_max_window_bits: Optional[int] = None
    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    level: int = 6
    mem_level: int = 5

    def __post_init__(self) -> None:
        _check(self.threshold >= 0, "threshold must be >= 0")
        for name in ("server_max_window_bits", "client_max_window_bits"):
            bits = getattr(self, name)
            _check(bits is None or 9 <= bits <= 15, f"{name} must be None or between 9 and 15")
        _check(-1 <= self.level <= 9, "level must be between -1 and 9")
        _check(1 <= self.mem_level <= 9, "mem_level must be between 1 and 9")


def compression_config(value: Any) -> Optional[CompressionConfig]:
    """``compression=`` as the native transport takes it: ``None`` (off), ``"deflate"`` or a CompressionConfig."""
    if value is None or isinstance(value, CompressionConfig):
        return value
    if value == "deflate":
        return CompressionConfig()
    raise ValueError(f"compression must be None, 'deflate' or a CompressionConfig, got {value!r}")


@dataclass(frozen=True)
class RpcConnectionConfig:
    """Lifetime and timeouts of one connection.

    The timeouts are checked by one watchdog timer per connection, which ticks
    every quarter of the shortest of them: each fires between its value and a
    quarter more, and costs nothing per message.
    """

    default_response_timeout: Optional[float] = None
    max_connection_duration: Optional[float] = None
    #: Close a connection on which nothing was received or sent, and no call
    #: was in flight either way, for this long (code 1001, "idle timeout").
    idle_timeout: Optional[float] = None
    #: Slow senders (slowloris): a message whose first bytes arrived and whose
    #: last did not within this many seconds closes the connection (code 1008).
    #: The project page promises 60 s.
    message_receive_timeout: Optional[float] = DEFAULT_RECEIVE_TIMEOUT
    #: A peer that reads nothing we send for this long is disconnected (the
    #: socket is aborted: a closing handshake could not get through either).
    send_timeout: Optional[float] = DEFAULT_SEND_TIMEOUT
    auto_reconnect: bool = False
    #: With ``auto_reconnect``: seconds before the first attempt after a lost
    #: connection; later attempts back off exponentially up to ``retry.max_wait``.
    reconnect_delay: float = 5.0
    #: With ``auto_reconnect``: attempts per lost connection before giving up.
    max_reconnect_attempts: int = 10
    debug: RpcDebugConfig = field(default_factory=RpcDebugConfig)
    websocket: WebSocketConnectionConfig = field(default_factory=WebSocketConnectionConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError for an impossible combination of timeouts."""
        rt, dur = self.default_response_timeout, self.max_connection_duration
        _check(rt is None or rt >= 0, f"default_response_timeout must be >= 0, got {rt}")
        _check(dur is None or dur > 0, f"max_connection_duration must be > 0, got {dur}")
        _check(
            self.idle_timeout is None or self.idle_timeout > 0,
            f"idle_timeout must be > 0, got {self.idle_timeout}",
        )
        _check(
            self.message_receive_timeout is None or self.message_receive_timeout > 0,
            "message_receive_timeout must be > 0 or None",
        )
        _check(self.send_timeout is None or self.send_timeout > 0, "send_timeout must be > 0 or None")
        _check(
            rt is None or dur is None or rt < dur,
            f"default_response_timeout ({rt}s) must be less than max_connection_duration ({dur}s)",
        )
        _check(self.reconnect_delay >= 0, "reconnect_delay must be >= 0")
        _check(self.max_reconnect_attempts >= 1, "max_reconnect_attempts must be >= 1")
        self.debug.validate()
        self.websocket.validate()


@dataclass(frozen=True)
class RpcBackpressureConfig:
    """Limits that keep one peer from exhausting the other's memory (the budget of one connection).

    * ``max_pending_requests``: incoming work running (calls, notifications,
      batch items, each until its answer is sent). Also the most of our own
      calls waiting for an answer; past it (or past the peer's advertised
      limit) our calls wait locally.
    * ``max_queued_requests``: incoming work waiting past ``max_pending_requests``;
      past it a call is refused at once with -32001 (``data.retry_after``).
    * ``max_connection_bytes``: bytes held for the peer (frames of work running
      or queued, answers not yet taken by the socket, parked metadata); past
      it calls are refused with -32001 too.
    * ``max_queued_calls``: our own calls waiting locally for room under the
      peer's limit; past it, ``RpcBackpressureError``.
    * ``max_send_queue_size``: answers handed to the socket and not yet taken
      by it; at the limit reading stops, until the peer reads.
    * ``max_batch_size``: items in one incoming batch; a longer one is refused
      whole with -32600.
    * ``max_depth``: nesting of a frame's JSON; deeper is refused with -32700
      before parsing.
    * ``max_message_size``: bytes of one frame; larger closes with 1009.
    """

    max_pending_requests: int = DEFAULT_MAX_PENDING_REQUESTS
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_send_queue_size: int = DEFAULT_MAX_SEND_QUEUE_SIZE
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_depth: int = DEFAULT_MAX_DEPTH
    max_queued_requests: int = DEFAULT_MAX_QUEUED_REQUESTS
    max_connection_bytes: int = DEFAULT_MAX_CONNECTION_BYTES
    max_queued_calls: int = DEFAULT_MAX_QUEUED_CALLS

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError for a limit that cannot work (zero or negative)."""
        _check(self.max_pending_requests > 0, "max_pending_requests must be > 0")
        _check(self.max_queued_requests >= 0, "max_queued_requests must be >= 0")
        _check(self.max_connection_bytes > 0, "max_connection_bytes must be > 0")
        _check(self.max_queued_calls >= 0, "max_queued_calls must be >= 0")
        _check(self.max_message_size > 0, "max_message_size must be > 0")
        _check(self.max_send_queue_size > 0, "max_send_queue_size must be > 0")
        _check(self.max_batch_size > 0, "max_batch_size must be > 0")
        _check(self.max_depth > 0, "max_depth must be > 0")


@dataclass(frozen=True)
class RpcKeepaliveConfig:
    """Periodic liveness checks; ``interval=0`` turns them off.

    ``max_failures`` (the project page's name) and ``max_consecutive_failures``
    (1.2's name) are the same setting; give either.
    """

    interval: float = 0
    max_consecutive_failures: int = 3
    use_protocol_ping: bool = True
    max_failures: Optional[int] = None

    def __post_init__(self) -> None:
        if self.max_failures is not None:
            object.__setattr__(self, "max_consecutive_failures", self.max_failures)
        object.__setattr__(self, "max_failures", self.max_consecutive_failures)
        self.validate()

    @property
    def enabled(self) -> bool:
        """Whether pings are sent at all (``interval > 0``)."""
        return self.interval > 0

    def validate(self) -> None:
        """Raise ValueError for a negative interval or no failures allowed."""
        _check(self.interval >= 0, f"interval must be >= 0, got {self.interval}")
        _check(
            not self.enabled or self.max_consecutive_failures >= 1,
            "max_failures must be >= 1 when keepalive is enabled",
        )


@dataclass(frozen=True)
class RpcRetryConfig:
    """Reconnection with exponential backoff (tenacity), as the project page describes."""

    enabled: bool = True
    max_attempts: int = 10
    min_wait: float = 0.1
    max_wait: float = 60.0
    jitter: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError for waits that cannot work."""
        _check(self.max_attempts > 0, "max_attempts must be > 0")
        _check(self.min_wait >= 0 and self.max_wait >= 0, "waits must be >= 0")
        _check(self.max_wait >= self.min_wait, "max_wait must be >= min_wait")


@dataclass(frozen=True)
class WebSocketRpcClientConfig:
    """Everything a client can be told, in one object."""

    connection: RpcConnectionConfig = field(default_factory=RpcConnectionConfig)
    backpressure: RpcBackpressureConfig = field(default_factory=RpcBackpressureConfig)
    keepalive: RpcKeepaliveConfig = field(default_factory=RpcKeepaliveConfig)
    retry: RpcRetryConfig = field(default_factory=RpcRetryConfig)
    websocket: WebSocketConnectionConfig = field(default_factory=WebSocketConnectionConfig)
    websocket_kwargs: Dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Validate every part (each also validates itself when built)."""
        for part in (self.connection, self.backpressure, self.keepalive, self.retry, self.websocket):
            part.validate()

    @classmethod
    def production_defaults(cls) -> WebSocketRpcClientConfig:
        """Timeouts, keepalive and limits for a long-running service (30 s calls, 300 s idle)."""
        return cls(
            connection=RpcConnectionConfig(
                default_response_timeout=30.0,
                max_connection_duration=3600.0,
                idle_timeout=300.0,
                websocket=WebSocketConnectionConfig(ping_timeout=60.0),
            ),
            backpressure=RpcBackpressureConfig(max_pending_requests=500),
            keepalive=RpcKeepaliveConfig(interval=30.0, max_consecutive_failures=3),
            retry=RpcRetryConfig(),
        )

    @classmethod
    def development_defaults(cls) -> WebSocketRpcClientConfig:
        """No receive timeout, so a paused debugger does not drop the connection."""
        return cls(connection=RpcConnectionConfig(message_receive_timeout=None))


@dataclass(frozen=True)
class RpcSettings:
    """Everything one channel obeys, resolved once from the config objects and keywords.

    The endpoint, the client and the channel each take one of these, so a
    setting is merged in exactly one place (:meth:`resolve`) and a misspelt
    keyword is a ``TypeError`` instead of a setting silently ignored.
    """

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_pending_requests: int = DEFAULT_MAX_PENDING_REQUESTS
    max_send_queue_size: int = DEFAULT_MAX_SEND_QUEUE_SIZE
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_depth: int = DEFAULT_MAX_DEPTH
    max_queued_requests: int = DEFAULT_MAX_QUEUED_REQUESTS
    max_connection_bytes: int = DEFAULT_MAX_CONNECTION_BYTES
    max_queued_calls: int = DEFAULT_MAX_QUEUED_CALLS
    default_response_timeout: Optional[float] = None
    max_connection_duration: Optional[float] = None
    idle_timeout: Optional[float] = None
    message_receive_timeout: Optional[float] = DEFAULT_RECEIVE_TIMEOUT
    send_timeout: Optional[float] = DEFAULT_SEND_TIMEOUT
    promise_ttl: float = DEFAULT_PROMISE_TTL
    debug_mode: bool = False
    discovery: bool = True
    #: A remote error raises (the default); ``False`` returns the response with
    #: ``.error`` set instead, as fastapi-ws-rpc 1.2 did.
    raise_on_error: bool = True

    def __post_init__(self) -> None:
        RpcBackpressureConfig(
            self.max_pending_requests,
            self.max_message_size,
            self.max_send_queue_size,
            self.max_batch_size,
            self.max_depth,
            self.max_queued_requests,
            self.max_connection_bytes,
            self.max_queued_calls,
        )
        RpcConnectionConfig(
            default_response_timeout=self.default_response_timeout,
            max_connection_duration=self.max_connection_duration,
            idle_timeout=self.idle_timeout,
            message_receive_timeout=self.message_receive_timeout,
            send_timeout=self.send_timeout,
        )
        _check(self.promise_ttl > 0, "promise_ttl must be > 0")

    @classmethod
    def resolve(
        cls,
        base: Optional[RpcSettings] = None,
        *,
        connection: Optional[RpcConnectionConfig] = None,
        backpressure: Optional[RpcBackpressureConfig] = None,
        debug: Optional[RpcDebugConfig] = None,
        owner: str = "RpcSettings",
        suggest: Iterable[str] = (),
        **overrides: Any,
    ) -> RpcSettings:
        """Merge, lowest first: ``base`` (or the defaults), the config objects, then keywords.

        A keyword given as ``None`` means "not given" (the legacy signatures
        default everything to ``None``). An unknown name raises ``TypeError``
        naming ``owner``, as a misspelt keyword of a function would.
        """
        known = _SETTING_NAMES
        for name in overrides:
            if name not in known:
                raise TypeError(
                    f"{owner}() got an unexpected keyword argument {name!r}{did_you_mean(name, [*known, *suggest])}"
                )
        for name, value in overrides.items():
            if value is not None:
                _check_type(owner, name, value)
        values: Dict[str, Any] = {}
        if connection is not None:
            values.update(
                default_response_timeout=connection.default_response_timeout,
                max_connection_duration=connection.max_connection_duration,
                idle_timeout=connection.idle_timeout,
                message_receive_timeout=connection.message_receive_timeout,
                send_timeout=connection.send_timeout,
            )
            if debug is None:
                debug = connection.debug
        if backpressure is not None:
            values.update(
                max_pending_requests=backpressure.max_pending_requests,
                max_message_size=backpressure.max_message_size,
                max_send_queue_size=backpressure.max_send_queue_size,
                max_batch_size=backpressure.max_batch_size,
                max_depth=backpressure.max_depth,
                max_queued_requests=backpressure.max_queued_requests,
                max_connection_bytes=backpressure.max_connection_bytes,
                max_queued_calls=backpressure.max_queued_calls,
            )
        if debug is not None:
            values["debug_mode"] = debug.debug_mode
        values.update((k, v) for k, v in overrides.items() if v is not None)
        return replace(base or cls(), **values) if values else (base or cls())


_SETTING_NAMES = frozenset(f.name for f in fields(RpcSettings))
#: What each setting must be: its type is checked where the user gave it, naming the class they built.
_INT_SETTINGS = frozenset(
    {
        "max_message_size",
        "max_pending_requests",
        "max_send_queue_size",
        "max_batch_size",
        "max_depth",
        "max_queued_requests",
        "max_connection_bytes",
        "max_queued_calls",
    }
)
_SECONDS_SETTINGS = frozenset(
    {
        "default_response_timeout",
        "max_connection_duration",
        "idle_timeout",
        "message_receive_timeout",
        "send_timeout",
        "promise_ttl",
    }
)


def _check_type(owner: str, name: str, value: Any) -> None:
    """A limit of the wrong type fails here, naming it, not deep inside at the first comparison."""
    if name in _INT_SETTINGS and (type(value) is bool or not isinstance(value, int)):
        raise TypeError(f"{owner}(): {name} must be an int, got {value!r}")
    if name in _SECONDS_SETTINGS and (type(value) is bool or not isinstance(value, (int, float))):
        raise TypeError(f"{owner}(): {name} must be a number of seconds (or None), got {value!r}")


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``candidates``, or nothing."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""

"""Configuration objects, with the names and defaults of ``fastapi-ws-rpc`` 1.x.

Where the 1.1 project page and the 1.2 package disagree, the page wins (it is
what users read): retries default to 10 attempts and 60 s between them, and the
keepalive config accepts ``max_failures`` as well as 1.2's
``max_consecutive_failures``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

DEFAULT_MAX_MESSAGE_SIZE = 10 * 1024 * 1024
DEFAULT_MAX_PENDING_REQUESTS = 1000
DEFAULT_PROMISE_TTL = 60.0
DEFAULT_RECEIVE_TIMEOUT = 60.0
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
    compression_threshold: int = 1024
    ping_timeout: Optional[float] = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _check(
            self.compression in (None, "deflate"),
            f"compression must be None or 'deflate', got {self.compression!r}",
        )
        _check(self.compression_threshold >= 0, "compression_threshold must be >= 0")
        _check(
            self.ping_timeout is None or self.ping_timeout >= 0,
            "ping_timeout must be >= 0 or None",
        )


@dataclass(frozen=True)
class RpcConnectionConfig:
    """Lifetime and timeouts of one connection."""

    default_response_timeout: Optional[float] = None
    max_connection_duration: Optional[float] = None
    idle_timeout: Optional[float] = None
    #: Slow senders: a message that takes longer than this to arrive closes the
    #: connection. The project page promises 60 s.
    message_receive_timeout: Optional[float] = DEFAULT_RECEIVE_TIMEOUT
    auto_reconnect: bool = False
    reconnect_delay: float = 5.0
    max_reconnect_attempts: int = 10
    debug: RpcDebugConfig = field(default_factory=RpcDebugConfig)
    websocket: WebSocketConnectionConfig = field(default_factory=WebSocketConnectionConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
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
    """Limits that keep one peer from exhausting the other's memory."""

    max_pending_requests: int = DEFAULT_MAX_PENDING_REQUESTS
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_send_queue_size: int = DEFAULT_MAX_PENDING_REQUESTS

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _check(self.max_pending_requests > 0, "max_pending_requests must be > 0")
        _check(self.max_message_size > 0, "max_message_size must be > 0")
        _check(self.max_send_queue_size >= 0, "max_send_queue_size must be >= 0 (0 disables it)")


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
        return self.interval > 0

    def validate(self) -> None:
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
        for part in (self.connection, self.backpressure, self.keepalive, self.retry, self.websocket):
            part.validate()

    @classmethod
    def production_defaults(cls) -> WebSocketRpcClientConfig:
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
        return cls(connection=RpcConnectionConfig(message_receive_timeout=None))

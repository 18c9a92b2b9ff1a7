"""How the modules below the channel see it: a protocol of its public surface.

``RpcMethodsBase.channel``, an interceptor's ``RpcCall.channel`` and a topic
subscription hold the connection's channel, but importing
:class:`~fastwsrpc.channel.RpcChannel` there would tie every module to the one
that composes them all (an import cycle of eleven modules, once). They type it
as this protocol instead: the channel satisfies it, and so would a test double.
"""

from __future__ import annotations

from typing import Any, Awaitable, Dict, List, Optional, Type

try:
    from typing import Protocol
except ImportError:  # pragma: no cover - Python < 3.8
    from typing_extensions import Protocol  # type: ignore[assignment]

from .protocol import Response


class Conversation(Protocol):
    """The public surface of one connection's channel, as methods and interceptors use it."""

    id: str
    #: ``channel.other.add(a=1, b=2)``: any attribute is a method of the other side.
    other: Any
    socket: Any
    settings: Any
    peer_features: Any

    @property
    def context(self) -> Dict[str, Any]: ...

    @property
    def close_reason(self) -> str: ...

    @property
    def running_count(self) -> int: ...

    @property
    def pending_count(self) -> int: ...

    def is_closed(self) -> bool: ...

    def call(self, name: str, args: Any = ..., timeout: Any = ...) -> Awaitable[Response]: ...

    async def notify(self, name: str, args: Any = ...) -> None: ...

    def call_batch(self, calls: Any, timeout: Any = ...) -> Awaitable[List[Response]]: ...

    def stream(
        self,
        name: str,
        args: Any = ...,
        *,
        buffer: int = ...,
        timeout: Optional[float] = ...,
        result_type: Optional[Type[Any]] = ...,
    ) -> Any: ...

    def subscribe(self, *topics: str, on_slow: Optional[str] = ..., buffer: int = ...) -> Any: ...

    def async_call(self, name: str, args: Any = ..., call_id: Any = ...) -> Any: ...

    def get_saved_promise(self, call_id: Any) -> Any: ...

    def get_saved_response(self, call_id: Any) -> Optional[Response]: ...

    def clear_saved_call(self, call_id: Any) -> None: ...

    async def close(self, code: int = ..., reason: str = ...) -> None: ...

    def abort(self, reason: str) -> None: ...

"""The methods and the FastAPI app the end-to-end tests talk to, and the memory-pair tests' methods."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Dict, List, Optional

import msgspec
import pydantic
from fastapi import Depends, FastAPI, WebSocket, WebSocketException, status

from fastwsrpc import NoResponse, RemoteValueError, RpcHandshakeRejectedError, RpcUtilityMethods, WebSocketRpcEndpoint
from fastwsrpc.server import HandshakeRequest, WebSocketRpcServer

#: What notifications delivered, by key, so a test can see them arrive.
RECORDED: Dict[str, List[Any]] = {}
#: Server-side ``sleep`` handlers that started, by key (so a test knows one is running).
STARTED: Dict[str, int] = {}
#: Server-side handlers that saw CancelledError, by key.
CANCELLED: Dict[str, int] = {}
#: ``ping`` calls answered, all connections together (the RPC-level keepalive calls it).
PINGS: List[int] = []


class User(pydantic.BaseModel):
    name: str
    tags: List[str]


class Point(msgspec.Struct):
    x: int
    y: int


@dataclasses.dataclass
class Box:
    width: float
    height: float


class Item(msgspec.Struct):
    name: str
    price: float


@dataclasses.dataclass
class Address:
    city: str
    zip: Optional[str] = None


class ServerMethods(RpcUtilityMethods):
    async def total(self, items: List[Item], discount: Optional[float] = None) -> float:
        """Sum of the prices.

        A typed method: params are validated and converted from the hints.
        """
        assert all(isinstance(item, Item) for item in items)
        return sum(item.price for item in items) - (discount or 0.0)

    async def where(self, address: Address) -> str:
        assert isinstance(address, Address)
        return address.city

    async def greet_user(self, user: User) -> str:
        assert isinstance(user, User)
        return f"hi {user.name}"

    async def make_point(self, x: int, y: int) -> Point:
        return Point(x, y)

    async def ping(self) -> str:
        """Answers ``"pong"``; the RPC-level keepalive calls it (counted in ``PINGS``)."""
        PINGS.append(1)
        return await super().ping()

    async def running(self) -> int:
        """Incoming calls this connection is handling, this one included."""
        return self.channel.running_count

    async def call_client_with_timeout(self, method: str, params: Any, timeout: float) -> str:
        try:
            await self.channel.call(method, params, timeout=timeout)
        except asyncio.TimeoutError:
            return "timed out"
        return "answered"

    async def add(self, a: int, b: int) -> int:
        return a + b

    async def concat(self, a: str = "", b: str = "") -> str:
        return a + b

    async def subtract(self, minuend: float, subtrahend: float) -> float:
        return minuend - subtrahend

    async def sleep(self, seconds: float, key: str = "") -> float:
        STARTED[key] = STARTED.get(key, 0) + 1
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            CANCELLED[key] = CANCELLED.get(key, 0) + 1
            raise
        return seconds

    async def fail(self) -> None:
        raise ValueError("secret detail")

    async def fail_with_code(self, code: int, message: str) -> None:
        raise RemoteValueError(message, code=code, data={"hint": "custom"})

    async def record(self, key: str, value: Any = None) -> None:
        RECORDED.setdefault(key, []).append(value)

    async def recorded(self, key: str) -> List[Any]:
        return RECORDED.get(key, [])

    async def nested(self, depth: int) -> List[str]:
        """Ping-pong between the two sides ``depth`` times, each side adding its name."""
        if depth <= 0:
            return ["server"]
        response = await self.channel.other.nested(depth=depth - 1)
        return ["server", *response.result]

    async def call_client(self, method: str, params: Any = None) -> Any:
        response = await self.channel.call(method, params)
        return response.result

    async def user(self) -> User:
        return User(name="ada", tags=["x", "y"])

    async def point(self) -> Point:
        return Point(1, 2)

    async def box(self) -> Box:
        return Box(1.5, 2.0)

    async def nothing(self) -> None:
        return None

    async def silent(self) -> Any:
        return NoResponse

    async def unencodable(self) -> Any:
        return object()

    async def _private(self) -> str:
        return "never"

    def not_async(self) -> str:
        return "never"

    def thread_name(self) -> str:
        """A plain ``def``: runs in a worker thread, so this is not the loop's thread."""
        import threading

        return threading.current_thread().name

    async def big(self, size: int) -> str:
        return "x" * size


# ---------------------------------------------------------------- memory-pair tests (test_channel_*.py)


class Observed(RpcUtilityMethods):
    """What a test watches on either side: notes delivered, handlers started and cancelled.

    Each connection gets a shallow copy of the methods object, so these lists
    are shared between the instance a test built and the channel's copy.
    """

    def __init__(self) -> None:
        super().__init__()
        self.notes: List[Any] = []
        self.started: List[str] = []
        self.cancelled: List[str] = []

    async def note(self, text: str) -> None:
        self.notes.append(text)

    async def hang(self, key: str = "") -> None:
        """Never answers on its own: only a cancellation (or a close) ends it."""
        self.started.append(key)
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            self.cancelled.append(key)
            raise


class ObservedServer(ServerMethods, Observed):
    """The end-to-end app's methods, observable."""


class ObservedClient(Observed):
    async def multiply(self, x: int, y: int) -> int:
        return x * y

    async def join(self, *parts: str) -> str:
        return "-".join(parts)

    async def nested(self, depth: int) -> List[str]:
        if depth <= 0:
            return ["client"]
        response = await self.channel.other.nested(depth=depth - 1)
        return ["client", *response.result]


def require_token(websocket: WebSocket) -> None:
    if websocket.headers.get("x-token") != "let-me-in":
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason="bad token")


def make_app(**endpoint_kwargs: Any) -> FastAPI:
    app = FastAPI()
    WebSocketRpcEndpoint(ServerMethods(), **endpoint_kwargs).register_route(app, "/ws")
    WebSocketRpcEndpoint(ServerMethods(), **endpoint_kwargs).register_route(
        app, "/secure", dependencies=[Depends(require_token)]
    )
    WebSocketRpcEndpoint(ServerMethods(), max_message_size=4096).register_route(app, "/small")
    WebSocketRpcEndpoint(ServerMethods(), max_pending_requests=2).register_route(app, "/limited")
    WebSocketRpcEndpoint(ServerMethods(), max_pending_requests=20_000).register_route(app, "/many")
    WebSocketRpcEndpoint(ServerMethods(), max_connection_duration=0.5).register_route(app, "/short")
    WebSocketRpcEndpoint(ServerMethods(), discovery=False).register_route(app, "/hidden")
    return app


async def token_required(request: HandshakeRequest) -> None:
    """``/secure`` on the native server: the same rule as ``require_token``, as ``authenticate=``."""
    if request.headers.get("x-token") != "let-me-in":
        raise RpcHandshakeRejectedError(403, "bad token")


def make_native(**server_kwargs: Any) -> WebSocketRpcServer:
    """The native server with the FastAPI app's routes and methods (``make_app``), one listener for all."""
    routes = {
        "/secure": WebSocketRpcServer(ServerMethods(), authenticate=token_required, **server_kwargs),
        "/small": WebSocketRpcServer(ServerMethods(), max_message_size=4096),
        "/limited": WebSocketRpcServer(ServerMethods(), max_pending_requests=2),
        "/many": WebSocketRpcServer(ServerMethods(), max_pending_requests=20_000),
        "/short": WebSocketRpcServer(ServerMethods(), max_connection_duration=0.5),
        "/hidden": WebSocketRpcServer(ServerMethods(), discovery=False),
    }
    return WebSocketRpcServer(ServerMethods(), routes=routes, **server_kwargs)

"""Serving one accepted connection: the path both servers share.

The FastAPI endpoint and the native server differ in how a connection is
accepted (ASGI or our own handshake) and in the transport they hand over; from
the channel on, serving is the same, so it is written once here. Everything
that exists from the moment the channel is built (its watchdog, its timers,
its cluster registration, the server's list of channels) is released in one
``finally``, whatever fails: ``identify``, ``cluster.attach``, ``on_connect``,
the read loop, or a cancellation of the serving task.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable, Dict, FrozenSet, Optional, Set

from .errors import RpcDuplicateClientError
from .logger import get_logger
from .transport import CLOSE_INTERNAL_ERROR, CLOSE_POLICY_VIOLATION, Transport

if TYPE_CHECKING:
    from .channel import RpcChannel
    from .endpoint import WebSocketRpcEndpoint

logger = get_logger("endpoint")


async def serve_connection(
    endpoint: WebSocketRpcEndpoint,
    transport: Transport,
    *,
    context: Dict[str, Any],
    subprotocol: Optional[str],
    agreed: FrozenSet[str],
    name: Any,
    identify_with: Any,
    speedups: Any = None,
    channels: Optional[Set[RpcChannel]] = None,
) -> None:
    """Build the channel for an accepted connection, register it, read until it ends, release it.

    ``name`` is the client id the route gave (``{client_id}``) or the
    authenticator returned; without one, ``endpoint.identify(identify_with)``
    names it, and failing that the channel's id. ``channels`` is the native
    server's set of open channels (for drain and shutdown).
    """
    from .channel import RpcChannel  # the adapters import this module; the channel imports much

    channel = RpcChannel(
        endpoint.methods,
        transport,
        settings=endpoint.settings,
        context=context,
        subprotocol=subprotocol,
        connect_callbacks=endpoint._on_connect,
        disconnect_callbacks=endpoint._on_disconnect,
        error_callbacks=endpoint._on_error,
        topics=endpoint.topics,
        interceptors=endpoint.interceptors,
        peer_features=agreed,
        speedups=speedups,
    )
    cluster = endpoint.cluster
    attaching = False
    client_id = ""
    ended_cleanly = False
    try:
        identify: Optional[Callable[[Any], Any]] = endpoint.identify
        if name is None and identify is not None:
            name = identify(identify_with)
            if inspect.isawaitable(name):
                name = await name
        client_id = str(name) if name is not None else channel.id
        attaching = True
        try:
            await cluster.attach(client_id, channel)
        except RpcDuplicateClientError:
            logger.warning("client id %r is already connected; refusing %s", client_id, transport.peer or "?")
            await channel.close(CLOSE_POLICY_VIOLATION, "client id already connected")
            ended_cleanly = True
            return
        if channels is not None:
            channels.add(channel)
        await channel.on_connect()
        await channel.run()
        ended_cleanly = True
    finally:
        if channels is not None:
            channels.discard(channel)
        if not channel.is_closed():
            # identify, attach or on_connect failed, or the serving task was
            # cancelled: the connection ends here (1011), its watchdog and
            # timers with it, and the disconnect callbacks run once.
            if not ended_cleanly:
                logger.warning("serving %s failed before its read loop ended; closing (1011)", transport.peer or "?")
            await _quiet_close(channel)
        if attaching:
            try:
                await cluster.detach(client_id, channel)
            except Exception:  # the broker's trouble: the registration expires with its TTL
                logger.exception("could not detach client %r from the cluster", client_id)


async def _quiet_close(channel: RpcChannel) -> None:
    try:
        await channel.close(CLOSE_INTERNAL_ERROR, "internal error")
    except BaseException:  # the socket is gone, or we are being cancelled: the channel is closed all the same
        channel.abort("internal error")

"""Session records in the cluster: what lets a client resume its session on another node.

:class:`ClusterRecords` is the cluster's side of :class:`fastwsrpc.sessions.SharedRecords`:
the records themselves live in the broker (:class:`~fastwsrpc.cluster.base.SessionBroker`),
and the hand-over is a request to the node that held the session (op ``session``),
which answers with the ids of the session's calls still running there once every
answer it made is in the broker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Set, cast

import msgspec

from ..errors import RpcBrokerUnavailableError, RpcTimeoutError
from .base import Head, RpcNodeGoneError, SessionBroker, join_frame, split_frame

if TYPE_CHECKING:
    from .core import Cluster

__all__ = ["ClusterRecords"]

#: How long the previous holder may take to hand a session over (it writes its answers first).
HAND_OVER_TIMEOUT = 5.0


class ClusterRecords:
    """Session records shared by the nodes of ``cluster`` (its broker must be a SessionBroker)."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._broker = cast(SessionBroker, cluster.broker)

    @property
    def node_id(self) -> str:
        return self._cluster.node_id

    async def take(self, session_id: str, ttl: float) -> Optional[str]:
        await self._cluster._ensure_started()
        return await self._broker.session_take(session_id, self.node_id, ttl)

    async def hand_over(self, node_id: str, session_id: str) -> Optional[List[str]]:
        """The calls of ``session_id`` still running on ``node_id``; ``None`` if that node is gone."""
        try:
            data = await self._cluster.broker.request(
                node_id, join_frame(Head(op="session", c=session_id)), HAND_OVER_TIMEOUT
            )
        except (RpcNodeGoneError, RpcTimeoutError):
            return None
        head, body = split_frame(data)
        if head.s != "ok":
            raise RpcBrokerUnavailableError(f"node {node_id} could not hand session {session_id} over: {head.m}")
        running: List[str] = msgspec.json.decode(body, type=List[str])
        return running

    async def recorded(self, session_id: str) -> Set[str]:
        return set(await self._broker.session_keys(session_id))

    async def get(self, session_id: str, key: str) -> Optional[bytes]:
        return await self._broker.session_get(session_id, key)

    async def put(self, session_id: str, answers: Dict[str, bytes], dropped: List[str], ttl: float) -> None:
        await self._broker.session_put(session_id, answers, dropped, ttl)

    async def alive(self, node_id: str) -> bool:
        return await self._cluster.node_alive(node_id)

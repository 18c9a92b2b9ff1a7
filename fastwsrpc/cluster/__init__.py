"""Scale-out: call, notify and broadcast to clients connected to any server process.

One :class:`Cluster` per process (the endpoint makes it: ``endpoint.cluster``), on a
shared :class:`Broker`:

* :class:`LocalBroker`: in-process, the default (one process, or several nodes in
  one process sharing a :class:`LocalHub`);
* :class:`RedisBroker`: Redis pub/sub for messages, keys with a TTL for presence
  (``pip install fastwsrpc[redis]``);
* :class:`NatsBroker`: a NATS subject per node, request-reply for routed calls
  (``pip install fastwsrpc[nats]``).

Topic publications (``Cluster.publish_topic``) reach every node, or with
``Cluster.per_topic`` on only the nodes that watch the topic (``Cluster.watch_topic``).

``broker_from_url`` picks one from a URL. ``redis`` and ``nats-py`` are imported only
when their broker is built, so neither is needed unless used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .base import Broker, RpcNodeGoneError
from .core import REPLACED_CLOSE_CODE, REPLACED_REASON, Cluster
from .local import LocalBroker, LocalHub

if TYPE_CHECKING:
    from .nats import NatsBroker
    from .redis import RedisBroker

__all__ = [
    "REPLACED_CLOSE_CODE",
    "REPLACED_REASON",
    "Broker",
    "Cluster",
    "LocalBroker",
    "LocalHub",
    "NatsBroker",
    "RedisBroker",
    "RpcNodeGoneError",
    "broker_from_url",
]


def __getattr__(name: str) -> Any:
    """``RedisBroker`` / ``NatsBroker`` on first access, so importing this package needs neither extra."""
    if name == "RedisBroker":
        from .redis import RedisBroker

        return RedisBroker
    if name == "NatsBroker":
        from .nats import NatsBroker

        return NatsBroker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def broker_from_url(url: str, **kwargs: Any) -> Broker:
    """The broker a URL names: ``memory://`` (a fresh in-process hub) or ``memory://NAME``
    (the process-wide hub of that name), ``redis://...``, ``rediss://...``, ``nats://...``
    (also ``tls://`` for NATS over TLS). Keywords go to the broker's constructor."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        name = url.split("://", 1)[1].strip("/")
        return LocalBroker(LocalHub.named(name) if name else None)
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisBroker

        return RedisBroker(url, **kwargs)
    if scheme in ("nats", "tls"):
        from .nats import NatsBroker

        return NatsBroker(url, **kwargs)
    raise ValueError(f"unknown broker URL scheme {scheme!r} in {url!r}: use memory://, redis://, rediss:// or nats://")

"""``fastapi_ws_rpc.connection_manager``, under fastwsrpc: the endpoint's connection registry.

A thin alias, so that imports written against fastapi-ws-rpc 1.x migrate by
changing the package name alone; the object is fastwsrpc's own.
"""

from __future__ import annotations

from . import ConnectionManager

__all__ = ["ConnectionManager"]

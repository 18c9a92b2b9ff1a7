"""``fastapi_ws_rpc.rpc_methods``, under fastwsrpc: what one side exposes to the other.

``RpcMethodsBase`` and ``NoResponse`` are :mod:`fastwsrpc.methods`'s own objects,
so that imports written against fastapi-ws-rpc 1.x migrate by changing the
package name alone. fastapi-ws-rpc's two helpers are defined here, where 1.x
has them: ``RpcUtilityMethods`` and its pydantic model ``ProcessDetails``. This
is the one module that imports pydantic at import time (for the model), and
nothing imports it until one of the two is named, so a program that does not
use them never loads pydantic. Both stay importable from ``fastwsrpc`` and
``fastwsrpc.methods``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any, Dict, List, Optional

from pydantic import BaseModel, Field

from .methods import PING_RESPONSE, NoResponse, RpcMethodsBase

#: Built-in methods every ``RpcMethodsBase`` exposes, as in fastapi-ws-rpc 1.2
#: (``_get_channel_id_`` is the one underscore name answered: the channel's id).
EXPOSED_BUILT_IN_METHODS = ["ping", "_get_channel_id_"]

__all__ = [
    "EXPOSED_BUILT_IN_METHODS",
    "PING_RESPONSE",
    "NoResponse",
    "ProcessDetails",
    "RpcMethodsBase",
    "RpcUtilityMethods",
]


class ProcessDetails(BaseModel):
    """Who answers: the process id, its command line and working directory (for diagnostics)."""

    pid: int = Field(default_factory=os.getpid)
    cmd: List[str] = Field(default_factory=lambda: list(sys.argv))
    workingdir: str = Field(default_factory=os.getcwd)


class RpcUtilityMethods(RpcMethodsBase):
    """Helpers for testing and diagnostics, as in ``fastapi-ws-rpc``."""

    async def get_process_details(self) -> ProcessDetails:
        """The answering process's details (which worker, which host)."""
        return ProcessDetails()

    async def call_me_back(self, method_name: str = "", args: Optional[Dict[str, Any]] = None) -> str:
        """Call ``method_name`` on the caller without waiting; answer the call id to collect later."""
        channel = self.channel
        promise = channel.async_call(method_name, args or {})
        return str(promise.call_id)

    async def get_response(self, call_id: str = "") -> Any:
        """The answer to a ``call_me_back`` call (waiting for it if needed), once."""
        channel = self.channel
        promise = channel.get_saved_promise(call_id)
        if promise is None:
            return None
        try:
            response = await asyncio.shield(promise.wait())
        finally:
            channel.clear_saved_call(call_id)
        return {"jsonrpc": "2.0", "id": response.id, "result": response.result}

    async def echo(self, text: str) -> str:
        """Answers ``text`` unchanged: a round trip with a payload."""
        return text

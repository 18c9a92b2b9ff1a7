"""``fastapi_ws_rpc.utils``, under fastwsrpc: id and token generators.

fastapi-ws-rpc 1.x code uses ``gen_uid()`` for call ids, client ids and test
keys, so it is here with the same contract (a uuid4 as 32 lowercase hex
digits). Its other helpers (pydantic v1/v2 shims, ``RandomUtils``,
``StringUtils``) served its own internals and are not carried over.
"""

from __future__ import annotations

import secrets
import uuid

__all__ = ["gen_token", "gen_uid"]


def gen_uid() -> str:
    """A random unique id: a uuid4 as 32 lowercase hex digits, as fastapi-ws-rpc's ``gen_uid``."""
    return uuid.uuid4().hex


def gen_token(size: int = 256) -> str:
    """A random secret token of ``size`` bits (an even number) as hex, from the OS's CSPRNG.

    ``ValueError`` for an odd size, as in fastapi-ws-rpc.
    """
    if size % 2 != 0:
        raise ValueError("Size in bits must be an even number.")
    return format(secrets.randbits(size), f"0{-(-size // 4)}x")

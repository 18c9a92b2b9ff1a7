"""Must NOT type-check: tests/test_public_api.py expects mypy to flag the marked line."""

from __future__ import annotations

from typing import List

import msgspec

from fastwsrpc import WebSocketRpcClient


class User(msgspec.Struct):
    name: str
    tags: List[str]


async def main(client: WebSocketRpcClient) -> int:
    typed = await client.other.get_user(result_type=User)
    wrong: int = typed.result  # error: a User is not an int
    return wrong

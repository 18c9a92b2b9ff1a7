"""Checked by mypy in tests/test_public_api.py: what the README promises a type checker sees."""

from __future__ import annotations

from typing import List

import msgspec

from fastwsrpc import RpcError, RpcMethodsBase, WebSocketRpcClient


class User(msgspec.Struct):
    name: str
    tags: List[str]


class ClientMethods(RpcMethodsBase):
    async def whoami(self) -> str:
        # self.channel is not Optional inside a call: no assert needed.
        response = await self.channel.other.greet(name="ada")
        return str(response.result)


async def main(client: WebSocketRpcClient) -> str:
    typed = await client.other.get_user(result_type=User)
    user: User = typed.result  # result_type=User makes .result a User
    try:
        await client.other.fail()
    except RpcError as exc:
        code: int | None = exc.code  # declared on every RpcError
        data = exc.data
        print(code, exc.message, data)
    return user.name

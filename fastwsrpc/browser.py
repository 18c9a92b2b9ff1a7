"""The browser client, ``fastwsrpc.js``, shipped inside this package, and a route that serves it.

The script is one dependency-free ES module (``fastwsrpc/js/fastwsrpc.js``, typed
by ``fastwsrpc.d.ts`` next to it). Serving it from the same app as the endpoint
means the page always talks to a server of its own version, with no CDN and no
JavaScript build step::

    app = FastAPI()
    WebSocketRpcEndpoint(methods).register_route(app, "/ws")
    mount_client_script(app)  # GET /fastwsrpc.js

    # in the page:
    # <script type="module">
    #   import { connect } from "/fastwsrpc.js";
    #   const rpc = await connect("/ws", { methods: { whoami: () => "browser" } });
    # </script>

The files are read with :mod:`importlib.resources`, so this works from a wheel,
an sdist, an editable install or a zip.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Union

from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Router

__all__ = ["client_script", "client_types", "mount_client_script"]

#: What the route answers with: a module script must be served as JavaScript, or browsers refuse to run it.
JAVASCRIPT = "application/javascript; charset=utf-8"


def _read(name: str) -> str:
    return resources.files("fastwsrpc").joinpath("js").joinpath(name).read_text(encoding="utf-8")


def client_script() -> str:
    """The text of ``fastwsrpc.js``, for a route, a template or a build step that copies it."""
    return _read("fastwsrpc.js")


def client_types() -> str:
    """The text of ``fastwsrpc.d.ts``: TypeScript declarations for ``fastwsrpc.js``."""
    return _read("fastwsrpc.d.ts")


def mount_client_script(router: Union[FastAPI, APIRouter, Starlette, Router], path: str = "/fastwsrpc.js") -> None:
    """Add ``GET path`` to ``router`` (a FastAPI app or APIRouter, or a plain Starlette one), serving the script.

    The text is read once, here. It is sent with an ``ETag`` and ``Cache-Control:
    no-cache``: browsers keep it, and ask (and get a 304) on each page load, so a
    page never runs a stale client against an upgraded server. The route is left
    out of the OpenAPI schema: it is not part of the API.
    """
    script = client_script()
    etag = '"' + hashlib.sha256(script.encode("utf-8")).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

    async def fastwsrpc_js(request: Request) -> Response:
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(script, media_type=JAVASCRIPT, headers=headers)

    if isinstance(router, (FastAPI, APIRouter)):
        router.add_api_route(path, fastwsrpc_js, methods=["GET"], include_in_schema=False)
    else:
        router.add_route(path, fastwsrpc_js, methods=["GET"], include_in_schema=False)

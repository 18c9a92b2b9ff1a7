"""OpenTelemetry tracing as an interceptor (``pip install fastwsrpc[otel]``).

``OpenTelemetryInterceptor()`` makes a CLIENT span for each outgoing call and a
SERVER span for each handled call, named by the method, with the RPC semantic
conventions' attributes (``rpc.system = "jsonrpc"``, ``rpc.method``,
``rpc.jsonrpc.version``, ``rpc.jsonrpc.request_id``, ``rpc.jsonrpc.error_code``
and ``rpc.jsonrpc.error_message`` on failure). Install it on both sides::

    WebSocketRpcEndpoint(methods, interceptors=[OpenTelemetryInterceptor()])
    WebSocketRpcClient(url, methods, interceptors=[OpenTelemetryInterceptor()])

The caller's W3C trace context (``traceparent``, ``tracestate``) travels with each
call in ``call.meta``, so the server's span is the child of the caller's, and a
call the server makes back to the client inside it continues the same trace.
It travels only to a peer that declared the ``meta`` feature in the handshake: a
plain JSON-RPC peer sees the usual frames and nothing else.
"""

from __future__ import annotations

from typing import Any, FrozenSet, Optional

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError("fastwsrpc.otel needs OpenTelemetry: pip install 'fastwsrpc[otel]' (opentelemetry-api)") from exc

from ._version import __version__
from .errors import RemoteValueError
from .interceptors import Proceed, RpcCall, RpcInterceptor

__all__ = ["OpenTelemetryInterceptor"]


class OpenTelemetryInterceptor(RpcInterceptor):
    """Spans for calls both ways, and trace context across the wire (see the module docstring)."""

    features: FrozenSet[str] = frozenset({"meta"})

    def __init__(self, tracer_provider: Optional[Any] = None) -> None:
        self._tracer = trace.get_tracer("fastwsrpc", __version__, tracer_provider=tracer_provider)

    async def outgoing(self, call: RpcCall, proceed: Proceed) -> Any:
        """A CLIENT span around the call; its context goes into ``call.meta`` for the other side."""
        with self._tracer.start_as_current_span(
            call.method, kind=SpanKind.CLIENT, attributes=_attributes(call), record_exception=False
        ) as span:
            propagate.inject(call.meta)
            try:
                result = await proceed()
            except RemoteValueError as exc:
                _failed(span, exc.code, exc.message)
                raise
            except Exception as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            finally:
                if call.id is not None:
                    span.set_attribute("rpc.jsonrpc.request_id", str(call.id))
            error = getattr(result, "error", None)
            if error is not None:  # raise_on_error=False: a failed response, not an exception
                _failed(span, error.code, error.message)
            return result

    async def incoming(self, call: RpcCall, proceed: Proceed) -> Any:
        """A SERVER span around the method, the child of the caller's span when its context came along."""
        parent = propagate.extract(call.meta) if call.meta else None
        token = otel_context.attach(parent) if parent is not None else None
        try:
            with self._tracer.start_as_current_span(
                call.method, kind=SpanKind.SERVER, attributes=_attributes(call), record_exception=False
            ) as span:
                try:
                    return await proceed()
                except RemoteValueError as exc:
                    _failed(span, exc.code, exc.message)
                    raise
                except Exception as exc:
                    _failed(span, -32603, "Internal error")
                    span.set_attribute("error.type", type(exc).__name__)
                    raise
        finally:
            if token is not None:
                otel_context.detach(token)


def _attributes(call: RpcCall) -> dict[str, Any]:
    attributes: dict[str, Any] = {"rpc.system": "jsonrpc", "rpc.method": call.method, "rpc.jsonrpc.version": "2.0"}
    if call.id is not None:
        attributes["rpc.jsonrpc.request_id"] = str(call.id)
    return attributes


def _failed(span: Any, code: Optional[int], message: str) -> None:
    if code is not None:
        span.set_attribute("rpc.jsonrpc.error_code", int(code))
    span.set_attribute("rpc.jsonrpc.error_message", message)
    span.set_status(Status(StatusCode.ERROR, message))

"""The ``Origin`` rule of the opening handshake: which web pages may open a connection.

Why a server must check it: a browser attaches the user's cookies (and HTTP
authentication, and TLS client certificates) to a WebSocket handshake whatever
page started it, and the same-origin policy does not apply to WebSockets. A
page on ``https://evil.example`` that a logged-in user visits can therefore open
a connection to ``wss://api.example.com`` *as that user* and call its methods:
cross-site WebSocket hijacking. RFC 6455 section 10.2 gives servers the means:
browsers always send the page's origin (RFC 6454) in the ``Origin`` header, a
page cannot forge it, and a server that is not meant to serve every site
should refuse an origin it does not expect (with HTTP 403).

The rule (``allowed_origins=`` of the endpoint and of the native server):

* **No** ``Origin`` **header**: accepted. Only browsers are bound to send one;
  programs (the Python client, ``websocat``, other servers) send none, and a
  program can set any header it likes anyway, so the check protects browser
  users, not the server from programs. Authentication does that.
* **Default** (``None``): a browser request is accepted only from the server's
  own origin, the ``Host`` the request was sent to: the ``Origin``'s
  ``host[:port]`` must equal the ``Host`` header's, letters compared without
  case and ports 80 and 443 counting as none. Either scheme is accepted
  (``http://`` and ``https://`` pages of the same host), as python-socketio
  does.
* **A list** of origins (``["https://app.example.com", "http://localhost:3000"]``)
  accepts those origins *as well as* the same origin.
* ``"*"`` accepts every origin: the check is off. Only for a service meant to
  be called from any site, with no ambient credentials (no cookies).
* ``Origin: null`` (RFC 6454 section 7.3: an opaque origin, such as a sandboxed
  iframe, a ``file://`` page or a cross-site redirect) is refused unless the
  list holds ``"null"`` (or is ``"*"``): anyone can make a page with that origin.
* A malformed ``Origin`` (not ``scheme://host[:port]``, or several) is refused.

Behind a reverse proxy that rewrites ``Host`` (to ``127.0.0.1:9000``, say), the
same origin no longer matches the page's: list the public origin, or have the
proxy pass the original ``Host`` (nginx: ``proxy_set_header Host $host;``).

This module is pure (no I/O, no asyncio, no framework) so that both servers
share one rule: :func:`normalize_allowed_origins` checks the setting once, when
the server is built, and :func:`origin_refusal` judges each handshake.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable
from typing import FrozenSet, Optional, Set, Tuple, Union

__all__ = ["ANY_ORIGIN", "AllowedOrigins", "normalize_allowed_origins", "origin_refusal"]


class _AnyOrigin(enum.Enum):
    ANY_ORIGIN = "*"

    def __repr__(self) -> str:
        return "ANY_ORIGIN"


#: What ``"*"`` normalizes to: every origin is accepted.
ANY_ORIGIN = _AnyOrigin.ANY_ORIGIN

#: A normalized ``allowed_origins``: ``None`` (same origin only), a set of
#: origins accepted besides the same origin, or :data:`ANY_ORIGIN`.
AllowedOrigins = Union[None, FrozenSet[str], _AnyOrigin]

#: Ports a URL leaves out for its scheme (RFC 6454 section 4, step 6: the default port).
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
#: RFC 3986 section 3.1.
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
#: RFC 3986 reg-name (unreserved, pct-encoded, sub-delims), at least one character.
_REG_NAME = re.compile(r"[a-z0-9\-._~%!$&'()*+,;=]+")
_PORT = re.compile(r"[0-9]{1,5}")
#: How much of a header value a refusal quotes (it goes to the log and the peer).
_QUOTE = 100


def _quote(value: str) -> str:
    return repr(value if len(value) <= _QUOTE else value[:_QUOTE] + "...")


def _split_host_port(authority: str) -> Optional[Tuple[str, Optional[int]]]:
    """``host[:port]`` (``[v6]:port`` for IPv6) as (lower-case host, port or None); None if malformed."""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            return None
        literal, rest = authority[1:end], authority[end + 1 :]
        try:
            host = f"[{ipaddress.IPv6Address(literal).compressed}]"
        except ValueError:
            return None
    else:
        host, colon, port_text = authority.partition(":")
        rest = colon + port_text
        host = host.lower()
        if not host.isascii() or not _REG_NAME.fullmatch(host):
            return None
    if not rest:
        return host, None
    if not rest.startswith(":") or not _PORT.fullmatch(rest[1:]):
        return None
    port = int(rest[1:])
    if not 0 < port < 65536:
        return None
    return host, port


def _parse_origin(value: str) -> Optional[Tuple[str, str, Optional[int]]]:
    """An origin (``scheme://host[:port]``) as (scheme, host, explicit non-default port); None if malformed.

    A trailing ``/`` is tolerated (people write it in settings); a path, query,
    fragment or user name is not: an origin is only where a page came from.
    """
    scheme, sep, rest = value.strip().partition("://")
    scheme = scheme.lower()
    if not sep or not _SCHEME.fullmatch(scheme):
        return None
    rest = rest.rstrip("/")
    if not rest or any(c in rest for c in "/?#@ \t"):
        return None
    split = _split_host_port(rest)
    if split is None:
        return None
    host, port = split
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    return scheme, host, port


def _serialize(scheme: str, host: str, port: Optional[int]) -> str:
    return f"{scheme}://{host}" if port is None else f"{scheme}://{host}:{port}"


def _normalize_one(item: object) -> str:
    if not isinstance(item, str):
        raise TypeError(f"allowed_origins: each origin must be a str, not {type(item).__name__} ({item!r})")
    if item.strip().lower() == "null":
        return "null"
    if not item.isascii():
        raise ValueError(
            f"allowed_origins: {item!r} is not ASCII; write the host in its ASCII (punycode) form, "
            "as browsers send it (https://xn--bcher-kva.example, not https://bücher.example)"
        )
    parsed = _parse_origin(item)
    if parsed is None:
        raise ValueError(
            f"allowed_origins: {item!r} is not an origin; write scheme://host[:port] with no path, "
            "such as 'https://app.example.com' or 'http://localhost:3000' (or '*' for any origin)"
        )
    return _serialize(*parsed)


def normalize_allowed_origins(value: object) -> AllowedOrigins:
    """Check and normalize the ``allowed_origins`` setting, once, when the server is built.

    ``None`` (the default): only the server's own origin (see the module
    docstring). ``"*"``: any origin (:data:`ANY_ORIGIN`). A ``str``: one origin.
    An iterable of ``str``: those origins, besides the same origin; ``"*"`` in it
    means any, ``"null"`` admits the opaque origin. Each origin is lowered in
    case, its default port (80 for http, 443 for https) and trailing ``/``
    dropped: ``"HTTPS://App.Example.com:443/"`` is ``"https://app.example.com"``.

    Raises ``TypeError`` for a value or item of the wrong type and ``ValueError``
    for one that is not an origin, naming ``allowed_origins`` and the value.
    """
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        raise TypeError(f"allowed_origins must be None, '*', a str or a list of str, not {type(value).__name__}")
    if isinstance(value, str):
        items: Iterable[object] = (value,)
    elif isinstance(value, Iterable) and not isinstance(value, dict):
        items = list(value)
    else:
        raise TypeError(
            f"allowed_origins must be None, '*', a str or a list of str, not {type(value).__name__} ({value!r})"
        )
    origins: Set[str] = set()
    any_origin = False
    for item in items:
        if isinstance(item, str) and item.strip() == "*":
            any_origin = True  # the others are still checked: a typo beside "*" is still a typo
        else:
            origins.add(_normalize_one(item))
    return ANY_ORIGIN if any_origin else frozenset(origins)


def _describe(allowed: AllowedOrigins, host: Optional[str]) -> str:
    same = f"same origin as host {host}" if host else "same origin as the Host header, which is missing"
    if isinstance(allowed, frozenset) and allowed:
        return f"{same}, {', '.join(sorted(allowed))}"
    return same


def origin_refusal(origin: Optional[str], host: Optional[str], allowed: AllowedOrigins) -> Optional[str]:
    """Why a handshake with this ``Origin`` must be refused (HTTP 403), or ``None`` to accept it.

    ``origin`` and ``host`` are the request's ``Origin`` and ``Host`` header
    values (``None`` when absent; several values joined by ``", "`` make a
    malformed one); ``allowed`` is what :func:`normalize_allowed_origins` gave.
    The rule and the reasons for it are in the module docstring (RFC 6455
    section 10.2, RFC 6454). The answer is one line fit for a log and for the
    403's body: header values are quoted and cut, never echoed raw.
    """
    if origin is None or allowed is ANY_ORIGIN:
        return None
    listed = allowed if isinstance(allowed, frozenset) else frozenset()
    host_split = _split_host_port(host.strip()) if host is not None else None
    shown_host = (
        None if host is None else (host.strip().lower() if host_split is not None else f"{_quote(host)} (malformed)")
    )
    if origin.strip().lower() == "null":
        if "null" in listed:
            return None
        return (
            "origin null (an opaque origin: sandboxed iframe, file:// page or redirect) is not allowed "
            f"(allowed_origins: {_describe(allowed, shown_host)}; add 'null' to admit it)"
        )
    parsed = _parse_origin(origin) if origin.isascii() else None
    if parsed is None:
        return f"malformed Origin header {_quote(origin)}"
    scheme, origin_host, origin_port = parsed
    serialized = _serialize(scheme, origin_host, origin_port)
    if serialized in listed:
        return None
    if host_split is not None and scheme in ("http", "https"):  # the schemes of web pages
        host_name, host_port = host_split
        if host_port in (80, 443):
            host_port = None  # the default of whichever scheme the request came in on
        if origin_port in (80, 443):
            origin_port = None
        if origin_host == host_name and origin_port == host_port:
            return None
    return f"origin {serialized} is not allowed (allowed_origins: {_describe(allowed, shown_host)})"

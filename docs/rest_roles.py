"""A griffe extension for the docs build: Sphinx roles in docstrings as Markdown code.

fastwsrpc's docstrings use reST roles (``:class:`RpcChannel```, ``:meth:`~a.B.c```),
which read well in ``help()`` and an editor. mkdocstrings renders Markdown, where a
role would show its markup; this turns each into inline code of the name it shows
(the last component after a ``~``), so the source keeps one style and the site
reads cleanly.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|attr|exc|data|obj|const):`(~?)([^`<]+?)\s*(?:<[^>]*>)?`")


def _replace(match: re.Match[str]) -> str:
    tilde, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


class RestRoles(griffe.Extension):
    """Rewrites the roles of every docstring griffe loads, before mkdocstrings renders it."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        docstring = getattr(obj, "docstring", None)
        if docstring is not None and ":" in docstring.value:
            docstring.value = _ROLE.sub(_replace, docstring.value)

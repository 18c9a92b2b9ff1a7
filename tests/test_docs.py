"""The written documentation keeps up with the code: every module has its line in
``docs/architecture.md``, and the README's links lead to files of the repository.

(``make docs`` checks the site's own links, with ``--strict``; the README is not
part of the site.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fastwsrpc"

pytestmark = pytest.mark.skipif(not (ROOT / "docs").is_dir(), reason="needs a source checkout (docs/)")


def test_architecture_names_every_module() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    modules = sorted(
        p.relative_to(PACKAGE).as_posix()
        for pattern in ("*.py", "*.pyx", "*.pyi", "cluster/*.py")
        for p in PACKAGE.glob(pattern)
    )
    missing = [m for m in modules if f"`{Path(m).name}`" not in text]
    assert not missing, f"docs/architecture.md does not name: {missing}"


def test_readme_links_lead_to_files() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = {t.split("#", 1)[0] for t in re.findall(r"\]\(([^)\s]+)\)", text)}
    local = sorted(t for t in targets if t and "://" not in t)
    assert local, "the README links to nothing?"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"

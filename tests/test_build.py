"""The wheel built on a machine without a C compiler is honest about it.

``setup.py`` makes the compiled module optional. When its build fails, the wheel
holds no platform code and must say so (tagged ``py3-none-any``, files in purelib),
and the user must learn it without ``pip -v``: pip hides a build's output, but
relays the build backend's ``UserWarning`` s when it builds a local directory.
With ``FASTWSRPC_REQUIRE_EXTENSIONS=1`` the same build fails instead.

``CC=false`` stands in for the missing compiler. Each build runs pip as a user
would (an isolated build environment with the ``build-system`` requirements of
pyproject.toml) on a copy of the sources in a temporary directory, so the
checkout gets no ``build/``. That a build with a compiler gives a platform wheel
with the module is covered by ``make install``, which builds it in place, and by
CI's wheels. Skipped where pip or the build requirements are not available, and
where ``CC`` does not name the compiler (MSVC).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, List

import pytest

ROOT = Path(__file__).resolve().parent.parent
WARNING = "fastwsrpc's compiled speedups could not be built"

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("pip") is None, reason="pip is needed to build a wheel"),
    pytest.mark.skipif(sys.platform == "win32", reason="MSVC does not take its compiler from CC"),
    pytest.mark.skipif(not (ROOT / "setup.py").is_file(), reason="needs a source checkout (setup.py)"),
]


def _pip_relays_backend_warnings() -> bool:
    """Whether this pip shows a build backend's warnings without -v (pip 26 does)."""
    try:
        from pip._vendor import pyproject_hooks
    except ImportError:
        return False
    return hasattr(pyproject_hooks, "BuildBackendWarning")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the sdist would hold for a wheel build, without any build products of the checkout."""
    src = tmp_path_factory.mktemp("build") / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "fastwsrpc",
        src / "fastwsrpc",
        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd", "*.c", "*.html"),
    )
    return src


def _build(source: Path, out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    shutil.rmtree(source / "build", ignore_errors=True)
    environ: Dict[str, str] = {
        k: v for k, v in os.environ.items() if k not in ("FASTWSRPC_REQUIRE_EXTENSIONS", "FASTWSRPC_NO_EXTENSIONS")
    }
    environ.update(CC="false", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", **env)
    command: List[str] = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)]
    result = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=100)
    output = result.stdout + result.stderr
    if result.returncode and "setuptools" in output and "No matching distribution" in output:
        pytest.skip("the build requirements (setuptools, Cython) could not be installed: offline?")
    return result


def test_no_compiler_gives_a_pure_wheel_and_says_so(source: Path, tmp_path: Path) -> None:
    result = _build(source, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    wheels = sorted(p.name for p in tmp_path.glob("*.whl"))
    assert len(wheels) == 1 and wheels[0].endswith("-py3-none-any.whl"), (wheels, output)
    with zipfile.ZipFile(tmp_path / wheels[0]) as wheel:
        names = wheel.namelist()
        info = next(n for n in names if n.endswith(".dist-info/WHEEL"))
        metadata = wheel.read(info).decode()
    assert "Root-Is-Purelib: true" in metadata and "Tag: py3-none-any" in metadata, metadata
    assert not [n for n in names if n.endswith((".so", ".pyd"))], names
    assert not [n for n in names if ".data/platlib/" in n], names  # a pure wheel installs into purelib
    assert "fastwsrpc/_speedups_py.py" in names  # the twin that will run
    if _pip_relays_backend_warnings():
        assert WARNING in output, output  # shown without -v
        assert "pure-Python twin" in output


def test_required_extension_fails_the_build(source: Path, tmp_path: Path) -> None:
    result = _build(source, tmp_path, FASTWSRPC_REQUIRE_EXTENSIONS="1")
    assert result.returncode != 0, result.stdout + result.stderr
    assert not list(tmp_path.glob("*.whl"))

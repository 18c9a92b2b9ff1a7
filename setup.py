"""Builds the optional compiled hot path; everything else is in pyproject.toml.

The extension is optional, as in websockets' setup.py: with no compiler or no
Cython, ``pip install .`` still succeeds and the package runs on its pure-Python
twin. Two things keep that honest:

* the warning is a Python warning (a ``UserWarning``), not only build output:
  pip hides a build's output unless ``-v``, but pip 26 relays a backend's
  ``UserWarning`` when it installs from a local directory (``pip install .``,
  ``make install``), and ``python -m build`` and ``setup.py`` print it;
* a wheel built without the compiled module is tagged pure (``py3-none-any``),
  not for the platform: it holds no platform code.

``FASTWSRPC_REQUIRE_EXTENSIONS=1`` (set in CI and cibuildwheel) turns a failed
build into an error, as aiohttp and msgspec always do; ``FASTWSRPC_NO_EXTENSIONS=1``
skips the build (a pure wheel, no warning).
"""

import os
import platform
import sys
import warnings

from setuptools import setup
from setuptools.command.build_ext import build_ext

try:
    from setuptools.command.bdist_wheel import bdist_wheel  # setuptools >= 70.1
except ImportError:  # pragma: no cover - older setuptools, with the wheel package
    from wheel.bdist_wheel import bdist_wheel

REQUIRE = bool(os.environ.get("FASTWSRPC_REQUIRE_EXTENSIONS"))
SKIP = bool(os.environ.get("FASTWSRPC_NO_EXTENSIONS")) or platform.python_implementation() != "CPython"

# setuptools' editable install (``pip install -e .``, ``make install``) warns, in a
# box that pip 26 shows, that folders named like the package may take precedence
# during imports: no news in this flat layout, where that folder is the package.
# Only that notice is silenced; every other warning and error still shows.
warnings.filterwarnings("ignore", message="Editable installation", category=UserWarning)

#: The commands that build code (pip's metadata hooks run setup.py too, and need no warning).
BUILDING = {"build", "build_ext", "bdist_wheel", "editable_wheel", "install", "develop"}
#: Why the compiled module was not built in this run (empty: it was, or it was not asked for).
NOT_BUILT = []


class SpeedupsNotBuilt(UserWarning):
    """fastwsrpc's compiled module could not be built; the pure-Python twin will run."""


def not_built(reason):
    """Say once, where pip shows it, that this build has no compiled module, and why."""
    if NOT_BUILT:
        return
    NOT_BUILT.append(reason)
    warnings.warn(
        f"fastwsrpc's compiled speedups could not be built ({reason}). fastwsrpc will run on "
        "its pure-Python twin: same behaviour, slower. For the compiled one, install a C "
        "compiler and Python's headers (Debian: apt install gcc python3-dev) and reinstall "
        "(pip install -v shows the compiler's output); FASTWSRPC_REQUIRE_EXTENSIONS=1 makes "
        "this an error.",
        SpeedupsNotBuilt,
        stacklevel=2,
    )


class OptionalBuildExt(build_ext):
    """Warn, do not fail, when the extension cannot be built (unless it is required)."""

    def run(self):
        try:
            super().run()
        except Exception as exc:
            self._skip(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skip(exc)

    def copy_extensions_to_source(self):
        # An editable install copies the built module next to the sources; there is
        # none to copy when the build failed (the warning has been given).
        if not NOT_BUILT:
            super().copy_extensions_to_source()

    def _skip(self, exc):
        if REQUIRE:
            raise
        text = " ".join(str(exc).split())
        # A failed compile quotes the whole compiler command line; -v shows all of it.
        not_built(f"{exc.__class__.__name__}: {text[:150]}{'...' if len(text) > 150 else ''}")


class HonestBdistWheel(bdist_wheel):
    """A wheel whose compiled module failed to build is pure: tag it ``py3-none-any``."""

    def run_command(self, command):
        super().run_command(command)
        if command == "build" and NOT_BUILT:
            # bdist_wheel decided from the declared extensions that the wheel is for
            # this platform; after the build, before it installs the files into the
            # wheel (purelib, not platlib) and names it, the truth is known.
            self.distribution.ext_modules = []
            self.root_is_pure = True


def extensions():
    if SKIP:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRE:
            raise
        if BUILDING.intersection(sys.argv):  # not when pip only asks for metadata
            not_built("Cython is not installed")
        return []
    from setuptools import Extension

    ext = Extension("fastwsrpc._speedups", ["fastwsrpc/_speedups.pyx"], optional=not REQUIRE)
    return cythonize([ext], compiler_directives={"language_level": "3"}, quiet=True)


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt, "bdist_wheel": HonestBdistWheel})

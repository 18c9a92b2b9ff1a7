"""Builds the optional compiled hot path; everything else is in pyproject.toml.

The extension is optional, as in websockets' setup.py: with no compiler or no
Cython, ``pip install .`` still succeeds and the package runs on its pure-Python
twin. ``FASTWSRPC_REQUIRE_EXTENSIONS=1`` (set in CI and cibuildwheel) turns a
failed build into an error; ``FASTWSRPC_NO_EXTENSIONS=1`` skips the build.
"""

import os
import platform
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

REQUIRE = bool(os.environ.get("FASTWSRPC_REQUIRE_EXTENSIONS"))
SKIP = bool(os.environ.get("FASTWSRPC_NO_EXTENSIONS")) or platform.python_implementation() != "CPython"


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

    def _skip(self, exc):
        if REQUIRE:
            raise
        sys.stderr.write(
            "\nWARNING: fastwsrpc's compiled speedups could not be built "
            f"({exc.__class__.__name__}: {exc}).\n"
            "fastwsrpc will run on its pure-Python implementation (same behaviour, slower).\n\n"
        )


def extensions():
    if SKIP:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRE:
            raise
        sys.stderr.write("\nWARNING: Cython is not installed; building fastwsrpc without speedups.\n\n")
        return []
    from setuptools import Extension

    ext = Extension("fastwsrpc._speedups", ["fastwsrpc/_speedups.pyx"], optional=not REQUIRE)
    return cythonize([ext], compiler_directives={"language_level": "3"}, quiet=True)


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})

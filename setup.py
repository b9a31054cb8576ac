"""Builds rtml's extension module rtml._core (pybind11) from core/ and bindings/.

Metadata and build requirements live in pyproject.toml; CMakeLists.txt builds the
same core/ sources for the C++ tests and sanitizer builds.

Environment:
  RTML_NATIVE=1   compile with -march=native (off by default: wheels must run on
                  any x86-64 / aarch64 machine)
  RTML_DEBUG=1    -O0 -g instead of -O3
"""

from __future__ import annotations

import os
from pathlib import Path

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

ROOT = Path(__file__).parent.resolve()


def sources() -> list[str]:
    """Every core/src and bindings translation unit (the one source list: a glob)."""
    found = sorted(ROOT.glob("core/src/**/*.cc")) + sorted(ROOT.glob("bindings/*.cc"))
    return [str(p.relative_to(ROOT)) for p in found]


def compile_args() -> list[str]:
    if os.environ.get("RTML_DEBUG") == "1":
        args = ["-O0", "-g"]
    else:
        args = ["-O3", "-fno-math-errno"]
    if os.environ.get("RTML_NATIVE") == "1":
        args.append("-march=native")
    return [*args, "-Wall", "-Wextra", "-fvisibility=hidden"]


ParallelCompile("RTML_BUILD_JOBS", default=0).install()

setup(
    ext_modules=[
        Pybind11Extension(
            "rtml._core",
            sources(),
            include_dirs=["core/include", "bindings"],
            cxx_std=17,
            extra_compile_args=compile_args(),
        )
    ],
    cmdclass={"build_ext": build_ext},
)

"""Builds rtml's extension modules: rtml._core (pybind11) from core/ and bindings/, and
rtml._wire (Cython), the server's per-connection protocol, which reaches the core
through the C API capsule declared in bindings/server_capi.h.

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

from Cython.Build import cythonize
from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import Extension, setup

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
        ),
        *cythonize(
            [
                Extension(
                    "rtml._wire",
                    ["rtml/_wire.pyx"],
                    include_dirs=["bindings"],
                    extra_compile_args=["-O2"],
                )
            ],
            compiler_directives={"language_level": "3"},
        ),
    ],
    cmdclass={"build_ext": build_ext},
)

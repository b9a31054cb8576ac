"""The ``rtml`` command line.

Examples
--------
>>> from rtml.cli import build_parser
>>> build_parser().parse_args(["compile", "model.json", "-o", "model.rtml"]).output
'model.rtml'
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from rtml import Model, RtmlError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``rtml`` command."""
    p = argparse.ArgumentParser(prog="rtml", description="Real-time ML inference engine.")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compile", help="compile an XGBoost/LightGBM model file into rtml's format")
    c.add_argument("model", help="XGBoost .json/.ubj or LightGBM .txt model file")
    c.add_argument("-o", "--output", required=True, help="path of the .rtml file to write")
    i = sub.add_parser("info", help="describe a model file")
    i.add_argument("model")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``rtml`` command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "compile":
            t0 = time.perf_counter()
            model = Model.load(args.model)
            model.save(args.output)
            ms = (time.perf_counter() - t0) * 1e3
            print(f"{model!r} -> {args.output} ({ms:.1f} ms)")
        elif args.command == "info":
            print(repr(Model.load(args.model)))
    except RtmlError as e:
        print(f"rtml: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``rtml`` command line: ``demo``, ``serve``, ``bench``, ``compile``, ``info``.

Examples
--------
>>> from rtml.cli import build_parser
>>> build_parser().parse_args(["compile", "model.json", "-o", "model.rtml"]).output
'model.rtml'
>>> build_parser().parse_args(["serve", "--port", "0"]).port
0
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Sequence

from rtml import Model, RtmlError

BENCH_SUITES = ("trees", "store", "scorer", "server")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``rtml`` command."""
    p = argparse.ArgumentParser(prog="rtml", description="Real-time ML inference engine.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser(
        "demo",
        help="stream synthetic card transactions through the shipped fraud model via the server",
    )
    d.add_argument("--events", type=int, default=None, help="transactions to stream")
    d.add_argument("--seed", type=int, default=7)
    d.add_argument(
        "--inprocess", action="store_true", help="score in-process instead of over loopback TCP"
    )
    s = sub.add_parser("serve", help="serve scorers, models and a feature store over TCP")
    s.add_argument("--config", help="TOML/JSON server config (default: the demo's fraud scorer)")
    s.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (default 7311; 0 = any free)")
    s.add_argument("--token", default=None, help="shared secret clients send in HELLO")
    s.add_argument("--admin", action="store_true", default=None, help="allow MODEL_LOAD/SWAP")
    s.add_argument("--loop", choices=("uvloop", "asyncio"), default=None)
    b = sub.add_parser("bench", help="run the benchmark suite (from a source checkout)")
    b.add_argument("suites", nargs="*", help=f"of {', '.join(BENCH_SUITES)} (default: all)")
    b.add_argument("--quick", action="store_true", help="short runs: a smoke test of the suite")
    c = sub.add_parser("compile", help="compile an XGBoost/LightGBM model file into rtml's format")
    c.add_argument("model", help="XGBoost .json/.ubj or LightGBM .txt model file")
    c.add_argument("-o", "--output", required=True, help="path of the .rtml file to write")
    i = sub.add_parser("info", help="describe a model file")
    i.add_argument("model")
    return p


def _serve(args: argparse.Namespace) -> int:
    overrides = {
        k: v
        for k, v in {
            "host": args.host,
            "port": args.port,
            "token": args.token,
            "admin": args.admin,
            "loop": args.loop,
        }.items()
        if v is not None
    }
    from rtml.server import Server

    if args.config is not None:
        from rtml.server.config import server_from_config

        server = server_from_config(args.config, **overrides)
    else:
        from rtml.demo import pipeline
        from rtml.demo.stream import make_stream

        store, handles = pipeline.build_store()
        # The demo's card, merchant and card-merchant profiles, as the demo starts with.
        pipeline.preload(handles, make_stream(1000).profiles)
        model = pipeline.load_model()
        scorer = pipeline.build_scorer(store, model)
        server = Server(store, scorers={"fraud": scorer}, models={"fraud": model}, **overrides)
        print("rtml serve: no --config, serving the demo's fraud scorer and model")

    def ready(srv: Server) -> None:
        print(
            f"rtml serve: listening on {srv.host}:{srv.port}; scorers {sorted(srv.scorers)}, "
            f"models {sorted(srv.models)}, tables {sorted(srv.store.tables)}, "
            f"window sets {sorted(srv.store.window_sets)}; SIGTERM or Ctrl-C drains and stops",
            flush=True,
        )

    server.serve_forever(on_ready=ready)
    print("rtml serve: stopped", flush=True)
    return 0


def _bench(args: argparse.Namespace) -> int:
    status = 0
    unknown = sorted(set(args.suites) - set(BENCH_SUITES))
    if unknown:
        known = list(BENCH_SUITES)
        print(f"rtml: error: unknown suites {unknown}; known: {known}", file=sys.stderr)
        return 2
    # The suite is the checkout's benchmarks/ package: importable from the current
    # directory (the console script's own directory comes first on sys.path).
    if os.path.isfile(os.path.join("benchmarks", "__init__.py")) and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for suite in args.suites or BENCH_SUITES:
        try:
            module = importlib.import_module(f"benchmarks.{suite}")
        except ModuleNotFoundError:
            print(
                "rtml: error: the benchmark suite lives in benchmarks/ of rtml's source "
                "checkout; run `rtml bench` from the repository root",
                file=sys.stderr,
            )
            return 2
        print(f"== rtml bench: {suite}", flush=True)
        status = max(status, int(module.main(["--quick"] if args.quick else []) or 0))
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``rtml`` command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            from rtml.demo.run import DEFAULT_EVENTS, run_demo

            run_demo(
                args.events or DEFAULT_EVENTS,
                seed=args.seed,
                transport="inprocess" if args.inprocess else "server",
            )
        elif args.command == "serve":
            return _serve(args)
        elif args.command == "bench":
            return _bench(args)
        elif args.command == "compile":
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
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

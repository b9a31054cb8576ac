"""Compiled tree models: rtml against its peers, side by side in one run.

Run from the repository root::

    python -m benchmarks.trees [--quick] [--rows N] [--out FILE.md]

For three boosters (xgboost 100 trees depth 6, xgboost 500 trees depth 8,
LightGBM 500 trees 63 leaves) trained with fixed seeds on synthetic HIGGS-like
data, every engine is measured for single-row latency (p50/p99 of individually
timed calls) and batch throughput at 1 and all threads, and its outputs are
checked against the native library's. Engines that are missing or fail show up
as "n/a (reason)"; the run itself never stops for one of them. The Markdown
report goes to stdout (and to --out); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np

from benchmarks._engines import ENGINES, Engine, Runner, Unsupported
from benchmarks._models import (
    EVAL_SEED,
    SPECS,
    TRAIN_SEED,
    ModelSpec,
    Trained,
    cache_dir,
    importlib_version,
    make_data,
    train,
)

# Outputs further than this from the native library's are flagged in the table.
DIFF_TOLERANCE = 1e-5
ROW_POOL = 1024  # distinct rows cycled through by the latency loop


@dataclasses.dataclass(frozen=True)
class Config:
    quick: bool
    train_rows: int
    batch_rows: int
    latency_calls: int
    latency_budget_s: float
    batch_repeats: int
    batch_budget_s: float
    tree_scale: float
    threads: tuple[int, ...]
    engines: tuple[str, ...] | None


@dataclasses.dataclass
class Result:
    engine: str
    error: str | None = None
    setup_s: float = 0.0
    p50_us: float | None = None
    p99_us: float | None = None
    rows_per_s: dict[int, float] = dataclasses.field(default_factory=dict)
    max_diff: float = 0.0
    notes: list[str] = dataclasses.field(default_factory=list)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send fd 1 to stderr so C libraries' chatter stays out of the report."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def time_row_calls(call, rows: list[np.ndarray], n: int, budget_s: float) -> np.ndarray:
    """Time ``call(row)`` up to n times (or budget_s), each call on its own, in ns."""
    out = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    k = len(rows)
    deadline = clock() + int(budget_s * 1e9)
    done = 0
    with gc_paused():
        for i in range(n):
            x = rows[i % k]
            t0 = clock()
            call(x)
            t1 = clock()
            out[i] = t1 - t0
            done = i + 1
            if t1 > deadline:
                break
    return out[:done]


def time_batch(
    batch, X: np.ndarray, repeats: int, budget_s: float
) -> tuple[np.ndarray, float, int, bool]:
    """Time ``batch(X)``: one warm-up call, then up to ``repeats`` calls or budget_s.

    Returns (warm-up output, median rows/s, calls timed, warm-up only). An engine
    whose warm-up alone eats half the budget is timed by that call only: a
    slow peer must not stretch the whole run.
    """
    clock = time.perf_counter_ns
    budget_ns = budget_s * 1e9
    with gc_paused():
        t0 = clock()
        out = batch(X)
        warm = clock() - t0
        times = [warm] if 2 * warm > budget_ns else []
        start = clock()
        while len(times) < repeats and (not times or clock() - start < budget_ns):
            t0 = clock()
            batch(X)
            times.append(clock() - t0)
    rate = X.shape[0] / (float(np.median(times)) / 1e9)
    return out, rate, len(times), 2 * warm > budget_ns


def timer_overhead_ns() -> float:
    clock = time.perf_counter_ns
    samples = np.empty(10_000, dtype=np.int64)
    for i in range(samples.size):
        t0 = clock()
        samples[i] = clock() - t0
    return float(np.median(samples))


def _diff(got, want: np.ndarray, result: Result, what: str) -> float:
    got = np.asarray(got, dtype=np.float64)
    if got.shape != want.shape:
        result.notes.append(f"{what} shape {got.shape}, native gives {want.shape}")
        if got.size != want.size:
            return float("inf")
        got = got.reshape(want.shape)
    return float(np.max(np.abs(got - want))) if want.size else 0.0


def check_rows(runner: Runner, rows: list[np.ndarray], ref: np.ndarray, result: Result) -> None:
    values = []
    for x in rows:
        out = runner.row_call(x)
        values.append(runner.row_value(out))
    if result.engine == "rtml" and not isinstance(out, float):
        result.notes.append(f"1-row predict returned {type(out).__name__}, not float")
    diff = _diff(np.array(values), ref[: len(rows)], result, "row")
    result.max_diff = max(result.max_diff, diff)


def run_engine(
    engine: Engine,
    trained: Trained,
    X: np.ndarray,
    ref: np.ndarray,
    rows: dict[bool, list[np.ndarray]],
    cfg: Config,
) -> Result:
    result = Result(_display_name(engine, trained))
    try:
        t0 = time.perf_counter()
        make = engine.setup(trained, cache_dir())
        result.setup_s = time.perf_counter() - t0
        for n_threads in cfg.threads:
            runner = make(n_threads)
            if runner.activate is not None:
                runner.activate()
            if n_threads == 1:
                pool = rows[runner.row_1d]
                n_check = min(len(pool), 256 if cfg.quick else len(pool))
                check_rows(runner, pool[:n_check], ref, result)
                times = time_row_calls(
                    runner.row_call, pool, cfg.latency_calls, cfg.latency_budget_s
                )
                result.p50_us = float(np.percentile(times, 50)) / 1e3
                result.p99_us = float(np.percentile(times, 99)) / 1e3
                if times.size < cfg.latency_calls:
                    result.notes.append(f"latency: {times.size:,} calls (time cap)")
            out, rate, reps, warm_only = time_batch(
                runner.batch, X, cfg.batch_repeats, cfg.batch_budget_s
            )
            result.max_diff = max(result.max_diff, _diff(out, ref, result, "batch"))
            result.rows_per_s[n_threads] = rate
            if warm_only:
                result.notes.append(f"{n_threads} thr: timed by its warm-up call (time cap)")
            elif reps < cfg.batch_repeats:
                result.notes.append(f"{n_threads} thr: {reps} call(s) (time cap)")
            del runner, out
            time.sleep(0.1)  # let idle OpenMP/TBB workers stop spinning
    except Unsupported as exc:
        result.error = str(exc)
    except Exception as exc:  # any peer failure becomes "n/a"
        result.error = f"{type(exc).__name__}: {_one_line(str(exc))}"
    return result


def _one_line(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _display_name(engine: Engine, trained: Trained) -> str:
    if engine.name == "native":
        call = "inplace_predict" if trained.spec.library == "xgboost" else "Booster.predict"
        return f"{trained.spec.library} {call}"
    return engine.name


def native_reference(trained: Trained, X: np.ndarray) -> np.ndarray:
    """The oracle: the library's own classic predict path."""
    if trained.spec.library == "xgboost":
        import xgboost

        return trained.booster.predict(xgboost.DMatrix(X))
    return trained.booster.predict(X)


# --- report -------------------------------------------------------------------


def _fmt_rate(r: float) -> str:
    if r >= 1e6:
        return f"{r / 1e6:.2f} M"
    if r >= 1e3:
        return f"{r / 1e3:.1f} k"
    return f"{r:.0f}"


def _fmt_us(us: float) -> str:
    return f"{us:,.1f}" if us < 1000 else f"{us:,.0f}"


def _ratio(rtml_cost: float | None, peer_cost: float | None) -> str:
    """Express peer vs rtml where both are costs (bigger = slower)."""
    if not rtml_cost or not peer_cost:
        return "-"
    r = peer_cost / rtml_cost
    if r >= 1.0:
        return f"rtml {r:.1f}x faster"
    return f"rtml {1 / r:.1f}x slower"


def render_table(results: list[Result], threads: tuple[int, ...]) -> list[str]:
    rtml = next((r for r in results if r.engine == "rtml" and r.error is None), None)
    thr_cols = [f"rows/s {t} thr" for t in threads]
    vs_cols = ["vs rtml: p50"] + [f"vs rtml: {t} thr" for t in threads]
    head = ["engine", "p50 µs", "p99 µs", *thr_cols, "max abs diff", *vs_cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if r.error is not None:
            cells = [r.engine, f"n/a ({r.error})"] + ["-"] * (len(head) - 2)
            lines.append("| " + " | ".join(cells) + " |")
            continue
        diff = f"{r.max_diff:.1e}"
        if not r.max_diff <= DIFF_TOLERANCE:
            diff = f"**{diff}**"
        cells = [r.engine, _fmt_us(r.p50_us), _fmt_us(r.p99_us)]
        cells += [_fmt_rate(r.rows_per_s[t]) for t in threads]
        cells.append(diff)
        if r is rtml:
            cells += ["-"] * len(vs_cols)
        else:
            cells.append(_ratio(rtml.p50_us if rtml else None, r.p50_us))
            for t in threads:
                mine = 1 / rtml.rows_per_s[t] if rtml else None
                cells.append(_ratio(mine, 1 / r.rows_per_s[t]))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def machine_lines() -> list[str]:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        gcc = subprocess.run(
            ["gcc", "-dumpfullversion"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        gcc = "not found"
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    try:
        load = f"{os.getloadavg()[0]:.2f}"
    except OSError:
        load = "unknown"
    return [
        f"- Machine: {cpu}; os.cpu_count() = {os.cpu_count()}, usable by this process: "
        f"{affinity}; {platform.system()} {platform.release()}; 1-min load average at "
        f"start: {load} (anything well above 0 means other processes shared the cores)",
        f"- Python {platform.python_version()}, gcc {gcc} (used by TL2cgen)",
    ]


VERSION_DISTS = (
    "rtml",
    "numpy",
    "xgboost",
    "xgboost-cpu",
    "lightgbm",
    "treelite",
    "tl2cgen",
    "onnxruntime",
    "onnxmltools",
    "lleaves",
    "llvmlite",
    "scikit-learn-intelex",
    "daal4py",
    "pytest-benchmark",
)


def version_line() -> str:
    found = [(d, importlib_version(d)) for d in VERSION_DISTS]
    return "- Versions: " + ", ".join(f"{d} {v}" for d, v in found if v)


def render(
    cfg: Config,
    command: str,
    machine: list[str],
    sections: list[tuple[Trained, list[Result]]],
    overhead: float,
) -> str:
    threads = " and ".join(str(t) for t in cfg.threads)
    out = [
        "# rtml compiled tree models vs peers",
        "",
        f"Command: `{command}`",
        "",
        *machine,
        version_line(),
        f"- Data: synthetic HIGGS-like, 28 float32 features; models trained on "
        f"{cfg.train_rows:,} rows (seed {TRAIN_SEED}), evaluated on a "
        f"{cfg.batch_rows:,}-row batch (seed {EVAL_SEED}).",
        f"- Single-row latency: {cfg.latency_calls:,} calls (or {cfg.latency_budget_s:g} s) "
        f"per engine, set to 1 thread, each timed on its own with time.perf_counter_ns, "
        f"cycling through {ROW_POOL} distinct rows, GC paused. Nothing is subtracted: "
        f"the timer's own cost (~{overhead:.0f} ns) is included. rtml gets a 1-D row and "
        f"returns a float; the peers get a (1, 28) array through their fastest public "
        f"1-row call.",
        f"- Batch throughput: rows/s on the whole batch at {threads} thread(s), median of "
        f"up to {cfg.batch_repeats} calls (or {cfg.batch_budget_s:g} s) after one "
        f"warm-up call (an engine whose warm-up alone takes half of that is timed by the "
        f"warm-up call only).",
        f"- max abs diff: largest |engine - native| over the batch and the checked single "
        f"rows; native = xgboost Booster.predict(DMatrix) / lightgbm Booster.predict. "
        f"**Bold** = above {DIFF_TOLERANCE:g}.",
    ]
    if cfg.quick:
        out.append(
            f"- --quick: {cfg.tree_scale:g}x the trees, fewer rows and calls; a smoke "
            f"test, not a measurement."
        )
    for trained, results in sections:
        out += ["", f"## {trained.spec.name}", ""]
        out += render_table(results, cfg.threads)
        notes = []
        for r in results:
            extra = list(r.notes)
            if r.error is None and r.setup_s >= 1.0:
                extra.insert(0, f"setup {r.setup_s:.1f} s")
            if extra:
                notes.append(f"- {r.engine}: " + "; ".join(extra))
        if notes:
            out += ["", *notes]
    return "\n".join(out) + "\n"


# --- main ---------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> tuple[Config, str | None]:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.trees", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--quick", action="store_true", help="small models, few calls: a <1 min smoke test"
    )
    p.add_argument(
        "--rows", type=int, help="rows in the throughput batch (default 100000, quick 10000)"
    )
    p.add_argument("--out", help="also write the Markdown report to this file")
    p.add_argument(
        "--engines",
        help="comma-separated subset of: " + ", ".join(e.name for e in ENGINES),
    )
    args = p.parse_args(argv)
    n_cpu = os.cpu_count() or 1
    threads = tuple(sorted({1, n_cpu}))
    engines = None
    if args.engines:
        engines = tuple(s.strip() for s in args.engines.split(","))
        known = {e.name for e in ENGINES}
        unknown = [e for e in engines if e not in known]
        if unknown:
            p.error(f"unknown engine(s) {unknown}; choose from {sorted(known)}")
    if args.quick:
        cfg = Config(True, 10_000, 10_000, 2_000, 0.5, 3, 1.0, 0.1, threads, engines)
    else:
        cfg = Config(False, 200_000, 100_000, 20_000, 4.0, 5, 6.0, 1.0, threads, engines)
    if args.rows is not None:
        if args.rows < 1:
            p.error(f"--rows must be positive, got {args.rows}")
        cfg = dataclasses.replace(cfg, batch_rows=args.rows)
    return cfg, args.out


def main(argv: list[str] | None = None) -> int:
    cfg, out_path = parse_args(argv)
    args = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "-m", "benchmarks.trees", *args])
    engines = [e for e in ENGINES if cfg.engines is None or e.name in cfg.engines]
    if cfg.engines and not any(e.name == "rtml" for e in engines):
        log("note: rtml not selected, so the 'vs rtml' columns stay empty")
    started = time.perf_counter()
    machine = machine_lines()  # before our own work raises the load average

    X, _ = make_data(cfg.batch_rows, EVAL_SEED)
    pool = X[: min(ROW_POOL, len(X))]
    rows = {
        True: [np.ascontiguousarray(r) for r in pool],
        False: [np.ascontiguousarray(pool[i : i + 1]) for i in range(len(pool))],
    }
    overhead = timer_overhead_ns()
    sections = []
    with stdout_to_stderr():
        for base in SPECS:
            spec: ModelSpec = base.scaled(cfg.tree_scale)
            t0 = time.perf_counter()
            trained = train(spec, cfg.train_rows)
            how = "loaded from cache" if trained.from_cache else "trained"
            log(f"[{spec.name}] {how} in {time.perf_counter() - t0:.1f} s ({trained.path})")
            ref = native_reference(trained, X)
            results = []
            for engine in engines:
                log(f"[{spec.name}] {engine.name} ...")
                res = run_engine(engine, trained, X, ref, rows, cfg)
                status = res.error or f"p50 {res.p50_us:.1f} us, diff {res.max_diff:.1e}"
                log(f"[{spec.name}] {engine.name}: {status}")
                results.append(res)
            sections.append((trained, results))
    report = render(cfg, command, machine, sections, overhead)
    report += f"\nTotal wall time: {time.perf_counter() - started:.0f} s\n"
    sys.stdout.write(report)
    if out_path:
        with open(out_path, "w") as f:
            f.write(report)
    # A peer may be missing; rtml may not: its failure, or a wrong answer from it,
    # fails the run.
    bad = [
        (trained.spec.name, r.error or f"max abs diff {r.max_diff:.1e}")
        for trained, results in sections
        for r in results
        if r.engine == "rtml" and (r.error or r.max_diff > 1e-5)
    ]
    for name, why in bad:
        log(f"error: rtml failed on {name}: {why}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

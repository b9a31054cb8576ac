"""Adapters that give every prediction engine the same shape for the benchmark.

Each engine has a ``setup(trained, cache)`` that does the one-time work (convert,
compile, load) and returns a factory ``make(n_threads) -> Runner``. A Runner holds
the engine's fastest public call for one row and for a batch, so the timing
loop in trees.py never sees engine-specific code. Anything that raises here is
reported by the caller as "n/a (reason)"; :class:`Unsupported` marks a model
kind an engine cannot take at all.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._models import N_FEATURES, Trained, atomic_write, importlib_version


class Unsupported(Exception):
    """The engine does not handle this kind of model (not a failure)."""


@dataclasses.dataclass
class Runner:
    """One engine configured for a fixed thread count.

    row_call is timed and takes a prepared row: a 1-D float32 array when
    row_1d is true, else a (1, n_features) float32 array. row_value turns its
    result into the probability, outside the timed region. batch is timed and
    returns the (n,) probabilities for a (n, n_features) float32 array.
    activate, if set, is called before each measurement (for engines whose
    thread count is process-global).
    """

    row_call: Callable[[np.ndarray], Any]
    row_value: Callable[[Any], float]
    batch: Callable[[np.ndarray], np.ndarray]
    row_1d: bool = False
    activate: Callable[[], None] | None = None


Factory = Callable[[int], Runner]


@dataclasses.dataclass(frozen=True)
class Engine:
    name: str
    setup: Callable[[Trained, Path], Factory]


def _first(out) -> float:
    return float(np.asarray(out).reshape(-1)[0])


# --- rtml -------------------------------------------------------------------


def setup_rtml(trained: Trained, cache: Path) -> Factory:
    import rtml

    def make(n_threads: int) -> Runner:
        model = rtml.Model.load(trained.booster, n_threads=n_threads)
        return Runner(
            row_call=model.predict,
            row_value=float,
            batch=model.predict,
            row_1d=True,
        )

    return make


# --- native libraries ---------------------------------------------------------


def setup_native(trained: Trained, cache: Path) -> Factory:
    booster = trained.booster

    if trained.spec.library == "xgboost":

        def make(n_threads: int) -> Runner:
            b = booster.copy()
            b.set_param({"nthread": n_threads})
            # inplace_predict skips DMatrix construction: xgboost's fastest path.
            return Runner(row_call=b.inplace_predict, row_value=_first, batch=b.inplace_predict)

        return make

    def make_lgb(n_threads: int) -> Runner:
        def predict(X):
            return booster.predict(X, num_threads=n_threads)

        return Runner(row_call=predict, row_value=_first, batch=predict)

    return make_lgb


# --- treelite GTIL ------------------------------------------------------------


def _treelite_model(trained: Trained):
    import treelite

    if trained.spec.library == "xgboost":
        return treelite.frontend.from_xgboost(trained.booster)
    return treelite.frontend.from_lightgbm(trained.booster)


def setup_gtil(trained: Trained, cache: Path) -> Factory:
    import treelite.gtil

    tl_model = _treelite_model(trained)
    predict = treelite.gtil.predict

    def make(n_threads: int) -> Runner:
        def call(X):
            return predict(tl_model, X, nthread=n_threads)

        return Runner(
            row_call=call,
            row_value=_first,
            batch=lambda X: call(X).reshape(-1),
        )

    return make


# --- TL2cgen ------------------------------------------------------------------


def setup_tl2cgen(trained: Trained, cache: Path) -> Factory:
    import tl2cgen

    version = importlib_version("tl2cgen")
    libpath = cache / f"tl2cgen-{trained.key}-{version}.so"
    if not libpath.exists():
        tl_model = _treelite_model(trained)
        cpus = os.cpu_count() or 1
        # One translation unit per ~20 trees keeps gcc -O3 from going quadratic
        # on huge functions while still compiling the units in parallel.
        units = max(cpus, tl_model.num_tree // 20)

        def build(tmp: str) -> None:
            # export_lib needs the .so suffix to pick the toolchain's output name.
            so_tmp = tmp + ".so"
            try:
                tl2cgen.export_lib(
                    tl_model,
                    toolchain="gcc",
                    libpath=so_tmp,
                    params={"parallel_comp": units},
                    nthread=cpus,
                )
                os.replace(so_tmp, tmp)
            finally:
                if os.path.exists(so_tmp):
                    os.unlink(so_tmp)

        atomic_write(libpath, build)

    DMatrix = tl2cgen.DMatrix
    # LightGBM thresholds are float64, so its compiled code wants float64 input,
    # and tl2cgen 1.0's own cast (np.array(copy=False)) fails under NumPy 2:
    # cast here instead.
    wide = trained.spec.library == "lightgbm"

    def make(n_threads: int) -> Runner:
        predictor = tl2cgen.Predictor(str(libpath), nthread=n_threads)
        run = predictor.predict

        def call(X):
            if wide:
                X = X.astype(np.float64)
            return run(DMatrix(X))

        return Runner(
            row_call=call,
            row_value=_first,
            batch=lambda X: call(X).reshape(-1),
        )

    return make


# --- ONNX Runtime -------------------------------------------------------------


def _onnx_bytes(trained: Trained, cache: Path) -> bytes:
    version = importlib_version("onnxmltools")
    path = cache / f"onnx-{trained.key}-{version}.onnx"
    if path.exists():
        return path.read_bytes()

    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    types = [("input", FloatTensorType([None, N_FEATURES]))]
    if trained.spec.library == "xgboost":
        onx = onnxmltools.convert_xgboost(trained.booster, initial_types=types)
    else:
        onx = onnxmltools.convert_lightgbm(trained.booster, initial_types=types, zipmap=False)
    blob = onx.SerializeToString()
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(blob))
    return blob


def setup_onnxruntime(trained: Trained, cache: Path) -> Factory:
    import onnxruntime as ort

    blob = _onnx_bytes(trained, cache)

    def make(n_threads: int) -> Runner:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = n_threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
        in_name = sess.get_inputs()[0].name
        outputs = [o.name for o in sess.get_outputs()]
        prob_name = next((o for o in outputs if "prob" in o), outputs[-1])
        run = sess.run
        names = [prob_name]

        def call(X):
            return run(names, {in_name: X})

        def value(out) -> float:
            return float(_positive_class(out[0])[0])

        return Runner(
            row_call=call,
            row_value=value,
            batch=lambda X: _positive_class(call(X)[0]),
        )

    return make


def _positive_class(probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs)
    if probs.ndim == 2 and probs.shape[1] == 2:
        return probs[:, 1]
    return probs.reshape(-1)


# --- lleaves ------------------------------------------------------------------


def setup_lleaves(trained: Trained, cache: Path) -> Factory:
    if trained.spec.library != "lightgbm":
        raise Unsupported("LightGBM models only")
    import lleaves

    # The binary is native code for this host's CPU, built by this llvmlite.
    versions = f"{importlib_version('lleaves')}-{importlib_version('llvmlite')}"
    binpath = cache / f"lleaves-{trained.key}-{versions}.bin"
    model = lleaves.Model(model_file=str(trained.path))
    # lleaves writes its cache itself when the file is missing; its default
    # fp64 keeps LightGBM's float64 thresholds exact.
    model.compile(cache=str(binpath))

    def make(n_threads: int) -> Runner:
        def row(X):
            return model.predict(X, n_jobs=1)

        def batch(X):
            return model.predict(X, n_jobs=n_threads)

        return Runner(row_call=row, row_value=_first, batch=batch)

    return make


# --- daal4py ------------------------------------------------------------------


def setup_daal4py(trained: Trained, cache: Path) -> Factory:
    import daal4py

    gbt = daal4py.mb.convert_model(trained.booster)
    # predict_proba builds a fresh prediction algorithm per call; reusing one
    # across calls fails once the row count changes, so this is the fastest
    # public path.
    call = gbt.predict_proba

    def make(n_threads: int) -> Runner:
        return Runner(
            row_call=call,
            row_value=lambda out: float(out[0, 1]),
            batch=lambda X: call(X)[:, 1],
            activate=lambda: daal4py.daalinit(n_threads),
        )

    return make


ENGINES = (
    Engine("rtml", setup_rtml),
    Engine("native", setup_native),  # xgboost inplace_predict / lightgbm Booster.predict
    Engine("treelite GTIL", setup_gtil),
    Engine("TL2cgen (gcc -O3)", setup_tl2cgen),
    Engine("ONNX Runtime", setup_onnxruntime),
    Engine("lleaves", setup_lleaves),
    Engine("daal4py", setup_daal4py),
)

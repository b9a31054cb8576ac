"""Synthetic data and cached reference models for the tree benchmarks.

The data imitates the shape of the HIGGS task (21 low-level kinematic features
plus 7 derived invariant masses, a weak nonlinear signal) so trees grow to the
depth a real workload reaches. Everything is generated from fixed seeds, and the
trained boosters are cached on disk keyed by everything that changes them
(parameters, rows, seeds, library version), so a re-run skips training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

N_FEATURES = 28
# Bump when make_data changes, so stale cached models are not reused.
DATA_VERSION = 1
TRAIN_SEED = 20240601
EVAL_SEED = 7


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One benchmarked model: which library trains it and with what."""

    library: str  # "xgboost" or "lightgbm"
    rounds: int
    params: tuple[tuple[str, Any], ...]

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def name(self) -> str:
        p = self.param_dict
        shape = f"depth {p['max_depth']}" if "max_depth" in p else f"{p['num_leaves']} leaves"
        return f"{self.library} {self.rounds} trees, {shape}"

    def scaled(self, factor: float) -> ModelSpec:
        """The same model with ``factor`` times the trees (for --quick)."""
        return dataclasses.replace(self, rounds=max(1, round(self.rounds * factor)))


SPECS = (
    ModelSpec("xgboost", 100, (("objective", "binary:logistic"), ("max_depth", 6), ("eta", 0.1))),
    ModelSpec("xgboost", 500, (("objective", "binary:logistic"), ("max_depth", 8), ("eta", 0.1))),
    ModelSpec(
        "lightgbm", 500, (("objective", "binary"), ("num_leaves", 63), ("learning_rate", 0.1))
    ),
)


def _invariant_mass(pt1, eta1, phi1, pt2, eta2, phi2):
    # Massless two-body invariant mass: m^2 = 2 pt1 pt2 (cosh(deta) - cos(dphi)).
    m2 = 2.0 * pt1 * pt2 * (np.cosh(eta1 - eta2) - np.cos(phi1 - phi2))
    return np.sqrt(np.maximum(m2, 0.0))


def make_data(n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (X float32 of shape (n_rows, 28), y int8 labels) from ``seed``."""
    rng = np.random.default_rng(seed)
    n = n_rows

    def particle(scale):
        pt = rng.lognormal(np.log(scale), 0.5, n)
        eta = rng.normal(0.0, 1.1, n)
        phi = rng.uniform(-np.pi, np.pi, n)
        return pt, eta, phi

    lep = particle(40.0)
    met_pt = rng.lognormal(np.log(35.0), 0.6, n)
    met_phi = rng.uniform(-np.pi, np.pi, n)
    jets = [particle(s) for s in (70.0, 50.0, 35.0, 25.0)]
    btag = [rng.choice([0.0, 1.0, 2.0], n, p=[0.6, 0.25, 0.15]) for _ in jets]

    low = [*lep, met_pt, met_phi]
    for (pt, eta, phi), b in zip(jets, btag, strict=True):
        low += [pt, eta, phi, b]

    met = (met_pt, np.zeros(n), met_phi)  # MET has no eta; treat it as central
    m_jj = _invariant_mass(*jets[0], *jets[1])
    m_jjj = _invariant_mass(m_jj, jets[0][1], jets[0][2], *jets[2])
    m_lv = _invariant_mass(*lep, *met)
    m_jlv = _invariant_mass(m_lv, lep[1], lep[2], *jets[0])
    m_bb = _invariant_mass(*jets[2], *jets[3])
    m_wbb = _invariant_mass(m_jj, jets[0][1], jets[0][2], m_bb, jets[2][1], jets[2][2])
    m_wwbb = _invariant_mass(m_wbb, jets[0][1], jets[0][2], m_lv, lep[1], lep[2])
    high = [m_jj, m_jjj, m_lv, m_jlv, m_bb, m_wbb, m_wwbb]

    X = np.column_stack(low + high).astype(np.float32)
    assert X.shape[1] == N_FEATURES

    # Signal: resonance bumps in two masses, b-tag multiplicity, a phi
    # correlation and an interaction, so no single split separates the classes.
    n_b = sum(b > 0 for b in btag)
    logit = (
        1.4 * np.exp(-(((m_bb - 125.0) / 25.0) ** 2))
        + 1.0 * np.exp(-(((m_jj - 80.0) / 20.0) ** 2))
        + 0.45 * n_b
        - 0.8 * np.tanh((m_wwbb - 500.0) / 200.0)
        + 0.6 * np.cos(lep[2] - met_phi) * (lep[0] > 45.0)
        + 0.3 * np.sin(jets[0][1] * jets[1][1])
        - 1.5
    )
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
    return X, y


def cache_dir() -> Path:
    """Where models and compiled artifacts are kept ($RTML_BENCH_CACHE wins)."""
    env = os.environ.get("RTML_BENCH_CACHE")
    if env:
        path = Path(env)
    else:
        path = Path(tempfile.gettempdir()) / "rtml-bench-cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _lib_version(library: str) -> str:
    return importlib.import_module(library).__version__


def cache_key(spec: ModelSpec, train_rows: int) -> str:
    """Stable hash of everything that determines the trained model."""
    blob = json.dumps(
        {
            "library": spec.library,
            "version": _lib_version(spec.library),
            "rounds": spec.rounds,
            "params": spec.param_dict,
            "train_rows": train_rows,
            "seed": TRAIN_SEED,
            "data_version": DATA_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename, so a killed run leaves no half file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the cache from other users
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@dataclasses.dataclass
class Trained:
    """A trained booster, the file it lives in and its cache key."""

    spec: ModelSpec
    booster: Any
    path: Path
    key: str
    from_cache: bool


def train(spec: ModelSpec, train_rows: int) -> Trained:
    """Load the booster for ``spec`` from the cache or train and cache it."""
    lib = importlib.import_module(spec.library)
    key = cache_key(spec, train_rows)
    suffix = ".ubj" if spec.library == "xgboost" else ".txt"
    path = cache_dir() / f"{spec.library}-{key}{suffix}"
    threads = os.cpu_count() or 1

    if spec.library == "xgboost":
        if path.exists():
            return Trained(spec, lib.Booster(model_file=str(path)), path, key, True)
        X, y = make_data(train_rows, TRAIN_SEED)
        params = {**spec.param_dict, "seed": 0, "nthread": threads, "tree_method": "hist"}
        booster = lib.train(params, lib.DMatrix(X, label=y), spec.rounds)
        atomic_write(path, lambda tmp: _save_xgb(booster, tmp, suffix))
    else:
        if path.exists():
            return Trained(spec, lib.Booster(model_file=str(path)), path, key, True)
        X, y = make_data(train_rows, TRAIN_SEED)
        params = {
            **spec.param_dict,
            "seed": 0,
            "deterministic": True,
            "num_threads": threads,
            "verbose": -1,
        }
        booster = lib.train(params, lib.Dataset(X, label=y), spec.rounds)
        atomic_write(path, lambda tmp: booster.save_model(tmp))
    return Trained(spec, booster, path, key, False)


def _save_xgb(booster, tmp: str, suffix: str) -> None:
    # xgboost picks the format from the extension, and mkstemp's ends in .tmp.
    raw = booster.save_raw(raw_format=suffix.lstrip("."))
    Path(tmp).write_bytes(bytes(raw))


def importlib_version(dist: str) -> str | None:
    """Installed version of distribution ``dist``, or None."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None

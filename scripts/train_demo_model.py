"""Trains the fraud model that ``rtml demo`` ships (rtml/demo/fraud.rtml).

The training and validation streams come from rtml.demo.stream with other seeds than
the demo's (seed 7): 1 for training, 2 for validation, each with its own cards and
merchants. Their features are read through the demo's own store and scorer
(rtml.demo.pipeline.collect_features), so the model is trained on exactly what it is
served. The script prints AUC, then detection rate and false-positive rate at a few
thresholds, and the threshold to put in rtml.demo.pipeline.THRESHOLD: the lowest one
whose validation false-positive rate is at most ``--max-fpr``.

Run from the repository root (one to two minutes on 2 cores)::

    python scripts/train_demo_model.py            # writes rtml/demo/fraud.rtml
    python scripts/train_demo_model.py --check    # trains and reports, writes nothing
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import xgboost as xgb
from sklearn.metrics import roc_auc_score

import rtml
from rtml.demo import pipeline
from rtml.demo.stream import make_stream

TRAIN_SEED, VALID_SEED = 1, 2
PARAMS = {
    "objective": "binary:logistic",
    "eval_metric": ["auc", "aucpr"],
    "max_depth": 6,
    "eta": 0.1,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 2,
    "tree_method": "hist",
    "nthread": 2,
    "seed": 0,
}
N_TREES = 100


def rates(scores: np.ndarray, y: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """Detection rate, false-positive rate and precision of flagging ``scores >= threshold``."""
    flagged = scores >= threshold
    tp = int((flagged & y).sum())
    fp = int((flagged & ~y).sum())
    return tp / max(1, int(y.sum())), fp / max(1, int((~y).sum())), tp / max(1, tp + fp)


def pick_threshold(scores: np.ndarray, y: np.ndarray, max_fpr: float) -> float:
    """The lowest threshold (rounded to 0.01) whose false-positive rate is at most ``max_fpr``."""
    for threshold in np.round(np.arange(0.01, 1.0, 0.01), 2):
        if rates(scores, y, float(threshold))[1] <= max_fpr:
            return float(threshold)
    return 0.99


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=400_000)
    ap.add_argument("--n-valid", type=int, default=200_000)
    ap.add_argument("--max-fpr", type=float, default=0.002)
    ap.add_argument("--check", action="store_true", help="train and report, write nothing")
    ap.add_argument(
        "-o", "--output", type=Path, default=Path(pipeline.__file__).with_name(pipeline.MODEL_FILE)
    )
    args = ap.parse_args()

    t0 = time.perf_counter()
    data = {}
    for name, seed, n in (("train", TRAIN_SEED, args.n_train), ("valid", VALID_SEED, args.n_valid)):
        stream = make_stream(n, seed=seed)
        X = pipeline.collect_features(stream)
        y = stream.events.is_fraud
        data[name] = (X, y, xgb.DMatrix(X, label=y, feature_names=pipeline.FEATURES))
        print(f"{name}: {n:,} events, {int(y.sum()):,} fraud ({y.mean():.2%}), seed {seed}")
    print(f"features: {len(pipeline.FEATURES)} ({time.perf_counter() - t0:.1f} s)")

    t1 = time.perf_counter()
    booster = xgb.train(
        PARAMS,
        data["train"][2],
        N_TREES,
        evals=[(data["train"][2], "train"), (data["valid"][2], "valid")],
        verbose_eval=False,
    )
    print(
        f"trained {N_TREES} trees, depth {PARAMS['max_depth']} ({time.perf_counter() - t1:.1f} s)"
    )

    model = rtml.Model.load(booster, n_threads=1)
    scores = {}
    for name, (X, y, dm) in data.items():
        scores[name] = np.asarray(model.predict(X))
        native = booster.predict(dm)
        assert np.allclose(scores[name], native, rtol=1e-5, atol=1e-7), "rtml != xgboost"
        print(f"{name} AUC {roc_auc_score(y, scores[name]):.4f}")

    y_valid = data["valid"][1]
    print("validation: threshold  detection  false-positive rate  precision")
    for threshold in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        det, fpr, prec = rates(scores["valid"], y_valid, threshold)
        print(f"            {threshold:9.2f}  {det:9.1%}  {fpr:19.3%}  {prec:9.1%}")
    chosen = pick_threshold(scores["valid"], y_valid, args.max_fpr)
    det, fpr, prec = rates(scores["valid"], y_valid, chosen)
    print(
        f"threshold {chosen:.2f} (lowest with validation FPR <= {args.max_fpr:.2%}): "
        f"detection {det:.1%}, FPR {fpr:.3%}, precision {prec:.1%}"
    )
    if chosen != pipeline.THRESHOLD:
        print(f"  -> set rtml.demo.pipeline.THRESHOLD = {chosen} (it is {pipeline.THRESHOLD})")
    if not args.check:
        model.save(args.output)
        print(f"wrote {args.output} ({os.path.getsize(args.output):,} bytes)")


if __name__ == "__main__":
    main()

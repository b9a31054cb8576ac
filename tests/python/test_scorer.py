"""rtml.Scorer against the same pipeline written by hand (dict lookups + the model)."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

import rtml

N_CARDS = 50


def build(seed: int = 0, n_trees: int = 20):
    """A 10-feature model over request fields, two tables and a window set, and a store."""
    rng = np.random.default_rng(seed)
    names = [
        "amount",
        "hour",
        "avg_amount",
        "n_chargebacks",
        "card_age",
        "merchant_risk",
        "merchant_volume",
        "txn_count_10m",
        "txn_sum_1h",
        "txn_max_10m",
    ]
    X = pd.DataFrame(rng.normal(size=(2000, len(names))), columns=names)
    X.iloc[rng.random(2000) < 0.1, 2] = np.nan
    y = (X["amount"] + X["txn_count_10m"] - X["merchant_risk"] > 0).astype(int)
    model = rtml.Model.load(
        xgb.XGBClassifier(n_estimators=n_trees, max_depth=4, random_state=seed).fit(X, y)
    )
    store = rtml.FeatureStore()
    cards = store.table(
        "card",
        key=str,
        fields={"avg": "float32", "chargebacks": "int32", "age": "float64"},
        ttl="30d",
        max_future="1000d",
    )
    merchants = store.table("merchant", key=int, fields={"risk": "float64", "volume": "float32"})
    txn = store.windows(
        "card_txn",
        key=str,
        value="amount",
        ops=["count", "sum", "max"],
        windows=["10m", "1h"],
        max_future="1000d",
    )
    card_keys = [f"c{i}" for i in range(N_CARDS)]
    cards.put_many(
        card_keys[:40],
        np.column_stack([rng.normal(size=40), rng.integers(0, 3, 40), rng.normal(size=40)]),
        ts=1000.0,
    )
    merchants.put_many(np.arange(20, dtype=np.int64), rng.normal(size=(20, 2)), ts=1000.0)
    txn.ingest(
        [card_keys[i] for i in rng.integers(0, 45, 500)],
        rng.normal(size=500),
        ts=1000.0 + rng.random(500) * 2000,
    )
    inputs = {
        "amount": rtml.request("amount"),
        "hour": rtml.request("hour"),
        "avg_amount": rtml.table("card", "avg", key="card_id"),
        "n_chargebacks": rtml.table("card", "chargebacks", key="card_id"),
        "card_age": rtml.table("card", "age", key="card_id"),
        "merchant_risk": rtml.table("merchant", "risk", key="merchant_id"),
        "merchant_volume": rtml.table("merchant", "volume", key="merchant_id"),
        "txn_count_10m": rtml.window("card_txn", "amount_count_10m", key="card_id"),
        "txn_sum_1h": rtml.window("card_txn", "amount_sum_1h", key="card_id"),
        "txn_max_10m": rtml.window("card_txn", "amount_max_10m", key="card_id"),
    }
    return model, store, inputs, names


def by_hand(model, store, names, req, now):
    """What a team would write: look every feature up, then call the model."""
    card = store["card"].get(req["card_id"], now=now) or {}
    merchant = store["merchant"].get(req["merchant_id"], now=now) or {}
    win = store["card_txn"].get(req["card_id"], now=now)
    values = {
        "amount": req["amount"],
        "hour": req["hour"],
        "avg_amount": card.get("avg", np.nan),
        "n_chargebacks": card.get("chargebacks", np.nan),
        "card_age": card.get("age", np.nan),
        "merchant_risk": merchant.get("risk", np.nan),
        "merchant_volume": merchant.get("volume", np.nan),
        "txn_count_10m": win["amount_count_10m"],
        "txn_sum_1h": win["amount_sum_1h"],
        "txn_max_10m": win["amount_max_10m"],
    }
    return model.predict(np.array([[values[n] for n in names]], dtype=np.float64))[0]


def requests(rng, n):
    return [
        {
            "card_id": f"c{rng.integers(0, N_CARDS)}",
            "merchant_id": int(rng.integers(0, 25)),
            "amount": float(rng.normal()),
            "hour": float(rng.integers(0, 24)),
        }
        for _ in range(n)
    ]


def test_scores_equal_the_hand_written_pipeline() -> None:
    model, store, inputs, names = build()
    scorer = rtml.Scorer(model, store, inputs)
    rng = np.random.default_rng(1)
    reqs = requests(rng, 300)
    for now in (2500.0, 3100.0, 1000.0 + 31 * 86400):  # the last: card records expired
        got = np.array([scorer.score(r, now=now) for r in reqs])
        want = np.array([by_hand(model, store, names, r, now) for r in reqs])
        np.testing.assert_array_equal(got, want)
        frame = pd.DataFrame(reqs)
        np.testing.assert_array_equal(scorer.score_many(frame, now=now), want)
        cols = {c: frame[c].to_numpy() for c in frame.columns}
        np.testing.assert_array_equal(scorer.score_many(cols, now=now), want)


def test_explain_shows_sources_values_and_ages() -> None:
    model, store, inputs, _ = build()
    scorer = rtml.Scorer(model, store, inputs)
    got = scorer.explain({"card_id": "c1", "merchant_id": 3, "amount": 1.5, "hour": 2}, now=1010.0)
    f = got["features"]
    assert f["amount"]["value"] == 1.5 and f["amount"]["found"]
    assert f["merchant_risk"]["age_seconds"] == pytest.approx(10.0)
    assert f["merchant_risk"]["source"] == rtml.table("merchant", "risk", key="merchant_id")
    missing = scorer.explain(
        {"card_id": "c49", "merchant_id": 24, "amount": 0, "hour": 1}, now=1010.0
    )
    assert not missing["features"]["avg_amount"]["found"]
    assert np.isnan(missing["features"]["avg_amount"]["value"])
    assert missing["features"]["avg_amount"]["age_seconds"] is None
    assert got["arm"] == "main" and got["shadow_score"] is None


def test_bad_inputs_and_requests_name_the_problem() -> None:
    model, store, inputs, _ = build()
    bad = dict(inputs)
    del bad["hour"]
    with pytest.raises(rtml.InputError, match=r"without an input \['hour'\]"):
        rtml.Scorer(model, store, bad)
    with pytest.raises(rtml.InputError, match="has no field 'nope'"):
        rtml.Scorer(model, store, {**inputs, "hour": rtml.table("card", "nope", key="card_id")})
    with pytest.raises(rtml.InputError, match="both str- and int-keyed"):
        rtml.Scorer(model, store, {**inputs, "hour": rtml.table("merchant", "risk", key="card_id")})
    with pytest.raises(rtml.InputError, match="no table or window set 'shop'"):
        rtml.Scorer(model, store, {**inputs, "hour": rtml.table("shop", "x", key="card_id")})
    scorer = rtml.Scorer(model, store, inputs)
    ok = {"card_id": "c1", "merchant_id": 3, "amount": 1.5, "hour": 2}
    with pytest.raises(rtml.InputError, match="lacks the key 'merchant_id'"):
        scorer.score({k: v for k, v in ok.items() if k != "merchant_id"})
    with pytest.raises(rtml.InputError, match="lacks the field 'hour'"):
        scorer.score({k: v for k, v in ok.items() if k != "hour"})
    with pytest.raises(rtml.InputError, match="'card_id': expected str"):
        scorer.score({**ok, "card_id": 5})
    with pytest.raises(rtml.InputError, match="'merchant_id': expected an int64"):
        scorer.score({**ok, "merchant_id": "m3"})
    with pytest.raises(rtml.InputError, match="'amount': expected a number"):
        scorer.score({**ok, "amount": "12"})
    assert np.isfinite(scorer.score({**ok, "amount": None}, now=1010.0)).all()  # None: missing
    with pytest.raises(rtml.InputError, match="lacks column"):
        scorer.score_many({"card_id": ["c1"], "amount": [1.0], "hour": [1.0]})


def test_swap_under_load_every_score_is_one_of_the_two_models() -> None:
    model_a, store, inputs, _ = build(seed=0)
    model_b, *_ = build(seed=5)
    scorer = rtml.Scorer(model_a, store, inputs, version="a")
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(requests(rng, 64))
    want_a = scorer.score_many(frame, now=2500.0)
    scorer.swap_model(model_b, version="b")
    want_b = scorer.score_many(frame, now=2500.0)
    assert not np.array_equal(want_a, want_b)
    stop = threading.Event()
    bad: list[str] = []
    counts = [0]

    def score_loop() -> None:
        while not stop.is_set():
            got = scorer.score_many(frame, now=2500.0)
            if not ((got == want_a).all(axis=-1) | (got == want_b).all(axis=-1)).all():
                bad.append("mixed")
            counts[0] += 1

    threads = [threading.Thread(target=score_loop) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(200):
            scorer.swap_model(model_a if i % 2 else model_b, version=f"v{i}")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not bad and counts[0] > 0
    assert scorer.versions["arms"][0][1] == "v199"


def test_ab_split_is_stable_and_shadow_is_recorded() -> None:
    model_a, store, inputs, _ = build(seed=0)
    model_b, *_ = build(seed=5)
    scorer = rtml.Scorer(
        variants={"a": model_a, "b": model_b},
        split={"a": 0.7, "b": 0.3},
        store=store,
        inputs=inputs,
        route_by="card_id",
    )
    arms = [
        scorer.explain({"card_id": f"x{i}", "merchant_id": 1, "amount": 0, "hour": 0}, now=1.0)[
            "arm"
        ]
        for i in range(3000)
    ]
    share_b = arms.count("b") / len(arms)
    assert 0.25 < share_b < 0.35
    again = scorer.explain({"card_id": "x7", "merchant_id": 1, "amount": 0, "hour": 0}, now=1.0)
    assert again["arm"] == arms[7]
    with pytest.raises(rtml.InputError, match="sum to 1"):
        rtml.Scorer(
            variants={"a": model_a, "b": model_b},
            split={"a": 0.7, "b": 0.2},
            store=store,
            inputs=inputs,
        )
    single = rtml.Scorer(model_a, store, inputs)
    single.set_shadow(model_b, version="candidate")
    req = {"card_id": "c2", "merchant_id": 1, "amount": 0.3, "hour": 5}
    got = single.explain(req, now=2500.0)
    solo_b = rtml.Scorer(model_b, store, inputs).score(req, now=2500.0)
    assert got["shadow_score"] == pytest.approx(np.asarray(solo_b).reshape(-1)[0])
    assert single.versions["shadow"] == "candidate"


def test_stats_count_requests_missing_features_ages_and_scores() -> None:
    model, store, inputs, _ = build()
    scorer = rtml.Scorer(model, store, inputs, name="fraud")
    rng = np.random.default_rng(3)
    reqs = requests(rng, 200)
    for r in reqs[:50]:
        scorer.score(r, now=2500.0)
    scorer.score_many(pd.DataFrame(reqs[50:]), now=2500.0)
    stats = scorer.stats()
    assert (stats["requests"], stats["rows"], stats["errors"]) == (51, 200, 0)
    assert stats["latency"]["score"]["count"] == 50 and stats["latency"]["score_many"]["count"] == 1
    assert stats["latency"]["score"]["p50"] <= stats["latency"]["score"]["p99"]
    assert set(stats["latency"]["score"]) >= {"p50", "p95", "p99", "p999"}
    card_missing = sum(int(r["card_id"][1:]) >= 40 for r in reqs)  # cards 40..49 have no record
    merchant_missing = sum(r["merchant_id"] >= 20 for r in reqs)
    assert stats["missing"]["avg_amount"] == stats["missing"]["card_age"] == card_missing
    assert stats["missing"]["merchant_risk"] == merchant_missing
    assert stats["missing"]["amount"] == 0
    age = stats["feature_age"]["merchant_risk"]
    assert age["count"] == 200 - merchant_missing
    assert age["p50"] == pytest.approx(1500e9, rel=0.01)  # merchants written at 1000 s
    assert stats["feature_age"]["avg_amount"]["count"] == 200 - card_missing
    assert "amount" not in stats["feature_age"]
    assert stats["scores"]["count"] == 200
    assert stats["window_events"] == {"late": store["card_txn"].stats()["late"], "dropped": 0}
    assert stats["model_version"] == "v1" and "psi" not in stats


def request_only_scorer(seed: int = 0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(20_000, 4)), columns=["a", "b", "c", "d"])
    y = X["a"] + 0.5 * X["b"] - X["c"]
    model = rtml.Model.load(xgb.XGBRegressor(n_estimators=20, max_depth=3).fit(X, y))
    scorer = rtml.Scorer(model, None, {c: rtml.request(c) for c in X.columns})
    return scorer, X


def test_drift_detects_a_shift_and_not_a_same_distribution_stream() -> None:
    scorer, X = request_only_scorer()
    with pytest.raises(rtml.InputError, match="set_reference"):
        scorer.drift()
    scorer.set_reference(X)
    rng = np.random.default_rng(7)
    same = pd.DataFrame(rng.normal(size=(20_000, 4)), columns=X.columns)
    scorer.score_many(same, now=1.0)
    calm = scorer.drift()
    assert all(v["level"] == "none" and v["psi"] < 0.1 for v in calm.values()), calm
    scorer.set_reference(X)  # a new window
    shifted = same.copy()
    shifted["a"] += 1.0
    scorer.score_many(shifted, now=1.0)
    moved = scorer.drift()
    assert moved["a"]["level"] == "significant" and moved["a"]["psi"] >= 0.25
    assert all(moved[c]["psi"] < 0.1 for c in ("b", "c", "d"))
    assert moved["__score__"]["psi"] >= 0.1  # the score follows a
    assert scorer.stats()["psi"]["a"] == moved["a"]["psi"]


def test_prometheus_scrape_of_a_scorer() -> None:
    import urllib.request

    from prometheus_client import CollectorRegistry
    from prometheus_client.parser import text_string_to_metric_families

    model_a, store, inputs, _ = build(seed=0)
    model_b, *_ = build(seed=5)
    scorer = rtml.Scorer(
        variants={"a": model_a, "b": model_b},
        split={"a": 0.5, "b": 0.5},
        store=store,
        inputs=inputs,
        name="fraud",
    )
    scorer.set_shadow(model_b, version="next")
    scorer.score_many(pd.DataFrame(requests(np.random.default_rng(4), 400)), now=2500.0)
    registry = CollectorRegistry()
    rtml.metrics.register(scorer, registry=registry)
    with rtml.metrics.serve(0, registry=registry) as server:
        text = urllib.request.urlopen(server.url, timeout=10).read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    rows = {tuple(sorted(s.labels.items())): s.value for s in families["rtml_rows"].samples}
    assert rows == {(("scorer", "fraud"), ("variant", "")): 400.0}
    score_counts = {
        s.labels["variant"]: s.value
        for s in families["rtml_score"].samples
        if s.name == "rtml_score_count"
    }
    assert score_counts["a"] + score_counts["b"] == 400 and score_counts["shadow"] == 400
    missing = {s.labels["feature"]: s.value for s in families["rtml_missing_features"].samples}
    assert missing["amount"] == 0 and "avg_amount" in missing
    info = next(f for name, f in families.items() if name.startswith("rtml_model"))
    assert {"next"} <= {s.labels["version"] for s in info.samples}
    stats = scorer.stats()
    assert sum(v["scores"]["count"] for v in stats["variants"] if v["variant"] != "shadow") == 400
    assert stats["variants"][-1]["divergence"]["count"] == 400


def test_serving_log_keeps_the_last_rows_as_scored(tmp_path) -> None:
    model, store, inputs, names = build()
    scorer = rtml.Scorer(model, store, inputs)
    with pytest.raises(rtml.InputError, match="enable_log"):
        scorer.serving_log()
    scorer.enable_log(100)
    reqs = requests(np.random.default_rng(9), 150)
    for r in reqs[:50]:
        scorer.score(r, now=2500.0)
    scores = scorer.score_many(pd.DataFrame(reqs[50:]), now=2600.0)
    log = scorer.serving_log()
    assert log["position"].tolist() == list(range(50, 150))
    assert log["card_id"].tolist() == [r["card_id"] for r in reqs[50:]]
    assert log["merchant_id"].tolist() == [r["merchant_id"] for r in reqs[50:]]
    np.testing.assert_array_equal(log["time"], 2600.0)
    np.testing.assert_array_equal(log["score"], scores[:, 1])  # the positive class
    want = scorer.explain(reqs[120], now=2600.0)["features"]
    np.testing.assert_array_equal(
        log["features"][70], [want[f]["value"] for f in log["feature_names"]]
    )
    assert log["feature_names"] == names and set(log["arm"]) == {"main"}
    scorer.dump_log(tmp_path / "log.npz")
    with np.load(tmp_path / "log.npz") as z:
        np.testing.assert_array_equal(z["features"], log["features"])
        assert z["card_id"].tolist() == log["card_id"].tolist()
    pytest.importorskip("pyarrow")
    scorer.dump_log(tmp_path / "log.parquet")
    frame = pd.read_parquet(tmp_path / "log.parquet")
    assert frame["card_id"].tolist() == log["card_id"].tolist()
    np.testing.assert_array_equal(frame[names].to_numpy(), log["features"])


def test_from_config_toml_and_json(tmp_path) -> None:
    import json

    model, store, inputs, _ = build()
    model.save(tmp_path / "fraud.rtml")
    toml = ['name = "fraud"', 'model = "fraud.rtml"', 'version = "v7"', "", "[inputs]"]
    config: dict = {"name": "fraud", "model": "fraud.rtml", "version": "v7", "inputs": {}}
    for feature, src in inputs.items():
        if isinstance(src, rtml.scorer.RequestInput):
            entry = {"request": src.field}
        elif isinstance(src, rtml.scorer.TableInput):
            entry = {"table": src.table, "field": src.field, "key": src.key}
        else:
            entry = {"window": src.windows, "column": src.column, "key": src.key}
        config["inputs"][feature] = entry
        toml.append(f"{feature} = {{ " + ", ".join(f'{k} = "{v}"' for k, v in entry.items()) + " }")
    (tmp_path / "scorer.toml").write_text("\n".join(toml))
    (tmp_path / "scorer.json").write_text(json.dumps(config))
    direct = rtml.Scorer(model, store, inputs)
    req = {"card_id": "c3", "merchant_id": 2, "amount": 0.4, "hour": 3}
    for path in ("scorer.toml", "scorer.json"):
        scorer = rtml.Scorer.from_config(tmp_path / path, store)
        np.testing.assert_array_equal(scorer.score(req, now=2500.0), direct.score(req, now=2500.0))
        assert scorer.name == "fraud" and scorer.versions["arms"][0][1] == "v7"
    bad = dict(config, inputs={**config["inputs"], "hour": {"table": "card"}})
    with pytest.raises(rtml.InputError, match="input 'hour'"):
        rtml.Scorer.from_config(bad, store)
    with pytest.raises(rtml.InputError, match="unknown entries"):
        rtml.Scorer.from_config({**config, "modle": "x"}, store)
    (tmp_path / "broken.toml").write_text("name = ")
    with pytest.raises(rtml.InputError, match="not valid TOML"):
        rtml.Scorer.from_config(tmp_path / "broken.toml", store)

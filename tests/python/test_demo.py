"""``rtml demo``: the stream generator, the feature pipeline (no leakage, training equals
serving), the shipped model, and run_demo over both transports."""

from __future__ import annotations

import dataclasses
import io
import itertools

import numpy as np
import pytest

from rtml.demo import pipeline
from rtml.demo.run import DemoReport, run_demo
from rtml.demo.stream import PATTERNS, Stream, make_stream

N = 20_000
SEED = 11


@pytest.fixture(scope="module")
def stream() -> Stream:
    return make_stream(N, seed=SEED)


@pytest.fixture(scope="module")
def features(stream: Stream) -> np.ndarray:
    return pipeline.collect_features(stream)


def _column(name: str) -> int:
    return pipeline.FEATURES.index(name)


# -- the stream ---------------------------------------------------------------------------


def test_stream_is_deterministic(stream: Stream) -> None:
    again = make_stream(N, seed=SEED)
    for f in dataclasses.fields(stream.events):
        assert np.array_equal(getattr(stream.events, f.name), getattr(again.events, f.name))
    for f in dataclasses.fields(stream.profiles):
        assert np.array_equal(getattr(stream.profiles, f.name), getattr(again.profiles, f.name))
    other = make_stream(N, seed=SEED + 1)
    assert not np.array_equal(other.events.amount, stream.events.amount)


def test_stream_shape_time_and_labels(stream: Stream) -> None:
    e = stream.events
    assert len(e) == N
    assert (np.diff(e.ts) >= 0).all()
    assert e.ts[0] >= stream.start
    simulated = e.ts - stream.start  # 35 events per simulated second: 571 s
    assert 500 < np.quantile(simulated, 0.999) < 572 and simulated[-1] < 1200
    assert (e.label_ts > e.ts).all()
    assert set(np.unique(e.local_hour)) <= set(range(24))
    assert set(np.unique(e.is_online)) == {0, 1}
    assert (e.amount >= 0.5).all()
    assert (e.is_fraud == (e.pattern > 0)).all()
    assert ((e.incident >= 0) == e.is_fraud).all()


def test_stream_fraud_rate_and_patterns(stream: Stream) -> None:
    e = stream.events
    assert 0.01 <= e.is_fraud.mean() <= 0.02
    avg = dict(zip(stream.profiles.card_id.tolist(), stream.profiles.avg_amount_90d, strict=True))
    seen = set()
    for k in np.unique(e.incident[e.is_fraud]):
        idx = np.flatnonzero(e.incident == k)
        pattern = PATTERNS[int(e.pattern[idx[0]])]
        seen.add(pattern)
        assert len(set(e.card_id[idx].tolist())) == 1  # one compromised card
        assert (e.pattern[idx] == e.pattern[idx[0]]).all()
        amounts = e.amount[idx]
        if pattern == "burst":
            assert 4 <= len(idx) <= 15
            assert e.ts[idx[-1]] - e.ts[idx[0]] < 30 * 60
        elif pattern == "card_testing":
            tiny = amounts <= 3.0
            assert tiny[0] and tiny.sum() >= 2 and not tiny[-1]
            assert amounts[-1] > 10 * amounts[0]
        else:
            assert len(idx) <= 2
            assert np.median(amounts) > 2.5 * avg[e.card_id[idx[0]]]
    assert seen == set(PATTERNS[1:])
    # Fraud favours merchants that are new (not in the start-of-stream profiles).
    known = np.isin(e.merchant_id, stream.profiles.merchant_id)
    assert (~known[e.is_fraud]).mean() > 5 * (~known[~e.is_fraud]).mean()
    # Quick succession alone is not fraud: legitimate shopping sessions exist.
    legit = ~e.is_fraud
    order = np.lexsort((e.ts[legit], e.card_id[legit]))
    cards, ts = e.card_id[legit][order], e.ts[legit][order]
    assert ((cards[1:] == cards[:-1]) & (np.diff(ts) < 60)).sum() > 100


# -- the pipeline: no leakage, training equals serving -----------------------------------


def test_features_never_read_the_event_itself_or_later(stream: Stream, features: np.ndarray):
    """Changing every event from k on changes no stored feature of events before k, nor
    of event k itself (only its request fields), and does change later ones."""
    k = N // 2
    e = stream.events
    changed = dataclasses.replace(
        e, amount=np.where(np.arange(N) >= k, e.amount * 7.0 + 100.0, e.amount)
    )
    X2 = pipeline.collect_features(dataclasses.replace(stream, events=changed))
    stored = [i for i, f in enumerate(pipeline.FEATURES) if f not in pipeline.REQUEST_FIELDS]
    assert np.array_equal(features[:k], X2[:k], equal_nan=True)
    assert np.array_equal(features[k, stored], X2[k, stored], equal_nan=True)
    assert not np.array_equal(features[k + 1 :, stored], X2[k + 1 :, stored], equal_nan=True)


def test_window_and_pair_features_match_a_brute_force_over_earlier_events(
    stream: Stream, features: np.ndarray
) -> None:
    e = stream.events
    profile = dict(
        zip(stream.profiles.pair_key.tolist(), stream.profiles.pair_n_txn.tolist(), strict=True)
    )
    pairs = pipeline.pair_keys(e)
    by_card: dict[str, list[int]] = {}
    by_pair: dict[str, int] = {}
    checked = 0
    for i, card in enumerate(e.card_id.tolist()):
        before = np.asarray(by_card.get(card, []), dtype=np.int64)
        age = e.ts[i] - e.ts[before]
        # A window W with buckets of r seconds holds the earlier events between W - r and
        # W ago at its edge, and everything more recent.
        for name, w, r in (("card_amount_count_1m", 60, 10), ("card_amount_count_1h", 3600, 60)):
            got = features[i, _column(name)]
            assert (age < w - r).sum() <= got <= (age <= w).sum(), (i, name)
        if len(before) and (age < 50).all():
            assert features[i, _column("card_amount_sum_1m")] == pytest.approx(
                e.amount[before].sum()
            )
            checked += 1
        n_pair = profile.get(pairs[i], 0) + by_pair.get(pairs[i], 0)
        got = features[i, _column("pair_n_txn")]
        assert (np.isnan(got) and n_pair == 0) or got == n_pair, i
        by_card.setdefault(card, []).append(i)
        by_pair[pairs[i]] = by_pair.get(pairs[i], 0) + 1
    assert checked > 100


def test_blocks_never_hold_a_card_or_merchant_twice(stream: Stream) -> None:
    e = stream.events
    bs = pipeline.blocks(e, max_block=64)
    assert bs[0][0] == 0 and bs[-1][1] == N
    for (a, b), (c, _) in itertools.pairwise(bs):
        assert b == c and 0 < b - a <= 64
        assert len(set(e.card_id[a:b].tolist())) == b - a
        assert len(set(e.merchant_id[a:b].tolist())) == b - a


# -- the shipped model and the demo run ----------------------------------------------------


def test_shipped_model_matches_the_pipeline() -> None:
    model = pipeline.load_model()
    assert model.feature_names == pipeline.FEATURES
    assert model.num_outputs == 1 and model.num_trees == 100
    store, _ = pipeline.build_store()
    scorer = pipeline.build_scorer(store, model)
    assert scorer.features == pipeline.FEATURES
    assert 0.0 < pipeline.THRESHOLD < 1.0


@pytest.fixture(scope="module")
def inprocess() -> tuple[DemoReport, str]:
    out = io.StringIO()
    return run_demo(N, seed=SEED, transport="inprocess", out=out), out.getvalue()


def test_run_demo_inprocess_detects_fraud(inprocess) -> None:
    report, text = inprocess
    assert report.n_events == N and report.transport == "inprocess"
    assert 0.01 <= report.n_fraud / N <= 0.02
    assert report.detection_rate > 0.6
    assert report.false_positive_rate < 0.01
    assert report.detection_rate > 50 * report.false_positive_rate
    assert report.precision > 0.5 and report.incidents_detected > 0.8
    assert set(report.detection_by_pattern) <= set(PATTERNS[1:])
    assert 0 < report.latency_p50_us <= report.latency_p99_us
    assert report.throughput_eps > 0 and report.wall_s > 0
    assert report.threshold == pipeline.THRESHOLD
    for words in ("detection rate", "false-positive rate", "precision", "throughput"):
        assert words in text
    assert "latency p50" in text and "latency p99" in text
    assert text.count(" txns ") == 10  # a line every 10% (not a terminal)
    assert "\r" not in text


def test_run_demo_scores_are_the_models_on_the_training_features(
    inprocess, stream: Stream, features: np.ndarray
) -> None:
    """What run_demo serves equals the shipped model on collect_features' rows."""
    report, _ = inprocess
    assert np.array_equal(report.scores, pipeline.load_model().predict(features))


def test_run_demo_progress_options() -> None:
    quiet = io.StringIO()
    run_demo(3_000, seed=1, transport="inprocess", out=quiet, progress=False)
    assert " txns " not in quiet.getvalue()
    assert "detection rate" in quiet.getvalue()

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Terminal()
    run_demo(3_000, seed=1, transport="inprocess", out=tty)
    assert "\r  100%     3,000 txns " in tty.getvalue()
    with pytest.raises(ValueError, match="transport"):
        run_demo(10, transport="carrier pigeon")


def test_run_demo_over_the_server_scores_as_in_process(inprocess) -> None:
    pytest.importorskip("rtml.server")
    report, _ = inprocess
    out = io.StringIO()
    remote = run_demo(N, seed=SEED, transport="server", out=out)
    assert remote.transport == "server" and "127.0.0.1:" in out.getvalue()
    assert np.array_equal(remote.scores, report.scores)
    assert remote.detection_rate == report.detection_rate
    assert remote.false_positive_rate == report.false_positive_rate
    assert 0 < remote.latency_p50_us <= remote.latency_p99_us

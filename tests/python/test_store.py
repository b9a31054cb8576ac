"""rtml.FeatureStore tables against a plain-Python reference, bad input, and threads."""

from __future__ import annotations

import datetime as dt
import threading

import numpy as np
import pandas as pd
import pytest

import rtml

FIELDS = {"amount": "float64", "count": "int32", "ratio": "float32"}


def make_table(**kw) -> rtml.Table:
    args = {"key": str, "fields": FIELDS, "ttl": "50s", "capacity": 1000, "max_future": "1000d"}
    args.update(kw)
    return rtml.FeatureStore().table("t", **args)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_event_stream_matches_reference(seed: int) -> None:
    """Out-of-order events, duplicates, deletes and expiry, against a dict of events."""
    rng = np.random.default_rng(seed)
    table = make_table()
    ref: dict[str, tuple[float, list[float]]] = {}
    keys = [f"k{i}" for i in range(60)]
    for step in range(3000):
        key = keys[rng.integers(len(keys))]
        if rng.random() < 0.05:
            assert table.delete(key) == (key in ref)
            ref.pop(key, None)
            continue
        ts = float(rng.integers(0, 200))  # out of order, with duplicates
        row = [float(rng.normal()), float(rng.integers(-5, 5)), float(np.float32(rng.random()))]
        table.put(key, dict(zip(FIELDS, row, strict=True)), ts=ts)
        if key not in ref or ts >= ref[key][0]:
            ref[key] = (ts, row)
        if step % 500 == 0:
            for now in (100.0, 150.0, 260.0):
                for k in keys:
                    want = ref.get(k)
                    got = table.get(k, now=now)
                    if want is None or now - want[0] >= 50:
                        assert got is None, (k, now)
                    else:
                        assert got == dict(zip(FIELDS, want[1], strict=True)), (k, now)
    now = 190.0
    batch = table.get_many(keys, now=now)
    for i, k in enumerate(keys):
        want = ref.get(k)
        live = want is not None and now - want[0] < 50
        assert batch.found[i] == live
        if live:
            np.testing.assert_array_equal(batch.values[i], np.float32(want[1]))
            assert batch.age_seconds[i] == pytest.approx(now - want[0])
        else:
            assert np.isnan(batch.values[i]).all() and np.isnan(batch.age_seconds[i])
    assert len(table) == len(ref)
    assert {k for k, _, _ in table.items(now=0.0)} == set(ref)


def test_get_many_key_forms_agree_with_get() -> None:
    """Every form of key batch reads what get() reads; unusable keys raise, naming them."""
    table = make_table(ttl=None, max_key_bytes=12)
    names = ["a", "", "ключ-ß", "card-0001", "exactly12byt", "数据"]
    for i, k in enumerate(names):
        table.put(k, [float(i), i, 0.5], ts=1.0)
    asked = [*names, "absent", "far-too-long-key", names[2]]
    # A batch reports a key longer than max_key_bytes as missing (get() raises).
    want = [None if len(k.encode()) > 12 else table.get(k, now=2.0) for k in asked]
    for form in (asked, tuple(asked), (k for k in asked), np.array(asked)):
        batch = table.get_many(form, now=2.0)
        assert batch.found.tolist() == [w is not None for w in want]
        for row, w in zip(batch.values, want, strict=True):
            if w is not None:
                np.testing.assert_array_equal(row, np.float32(list(w.values())))
    with pytest.raises(rtml.InputError, match="UTF-8"):
        table.get_many(["ok", "\udc80"], now=2.0)
    with pytest.raises(rtml.InputError, match="expected str"):
        table.get_many(["ok", b"bytes"], now=2.0)

    ints = make_table(key=int, ttl=None)
    ints.put_many(np.arange(5), np.ones((5, 3)), ts=1.0)
    mixed = [0, np.int64(1), np.uint8(2), 2**40, -7]
    assert ints.get_many(mixed, now=2.0).found.tolist() == [True, True, True, False, False]
    with pytest.raises(rtml.InputError, match="outside int64"):
        ints.get_many([1, 2**63], now=2.0)
    with pytest.raises(rtml.InputError, match="expected int"):
        ints.get_many([1, True], now=2.0)


def test_int_keys_numpy_arrays_and_put_many_dataframe() -> None:
    table = make_table(key=int)
    keys = np.arange(10, dtype=np.int64) * 7
    values = pd.DataFrame({"ratio": np.arange(10) / 4, "amount": np.arange(10.0), "count": 1})
    assert table.put_many(keys, values, ts=np.full(10, 5.0)) == 0
    assert table.put_many(keys[:3], values.iloc[:3], ts=4.0) == 3  # older: ignored
    out = np.zeros((10, 3), dtype=np.float32)
    found = table.get_many_into(keys, out, now=6.0)
    assert found.all()
    np.testing.assert_array_equal(out[:, 0], np.arange(10.0))
    np.testing.assert_array_equal(out[:, 2], np.arange(10) / 4)
    assert table.get(int(keys[3]), now=6.0) == {"amount": 3.0, "count": 1, "ratio": 0.75}


def test_time_types() -> None:
    table = make_table(ttl=None)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    table.put("a", [1, 2, 3], ts=t0)
    table.put("b", [1, 2, 3], ts=np.datetime64("2026-01-01T00:00:01"))
    batch = table.get_many(["a", "b"], now=t0 + dt.timedelta(seconds=10))
    np.testing.assert_allclose(batch.age_seconds, [10.0, 9.0])
    with pytest.raises(rtml.InputError, match="naive datetime"):
        table.put("a", [1, 2, 3], ts=dt.datetime(2026, 1, 1))


def test_bad_input_is_refused_and_nothing_stored_is_damaged() -> None:
    table = make_table(capacity=3, max_key_bytes=8)
    table.put("ok", [1.0, 2, 3.0], ts=1.0)
    before = table.get("ok", now=2.0)
    cases = [
        (
            lambda: table.put("ok", {"amount": 1, "count": 2, "ratio": 3, "extra": 4}),
            "unknown field",
        ),
        (lambda: table.put("ok", {"amount": 1}), "missing field"),
        (lambda: table.put("ok", ["x", 2, 3]), "numbers"),
        (lambda: table.put("ok", [1.0, 2.5, 3.0]), "expected integers"),
        (lambda: table.put("way-too-long-key", [1, 2, 3]), "too long"),
        (lambda: table.put(None, [1, 2, 3]), "expected str"),
        (lambda: table.put(float("nan"), [1, 2, 3]), "expected str"),
        (lambda: table.put(5, [1, 2, 3]), "expected str"),
        (lambda: table.put_many(["a", "b"], [[1, 2, 3]]), "shape"),
        (lambda: table.put("ok", [1, 2, 3], ts=float("inf")), "finite"),
        (lambda: table.put("ok", [9, 9, 9], ts=4e9), "future"),
    ]
    for call, message in cases:
        with pytest.raises(rtml.InputError, match=message):
            call()
    assert table.get("ok", now=2.0) == before
    # A batch with a bad row anywhere is refused whole (validation precedes writes).
    with pytest.raises(rtml.InputError):
        table.put_many(["n1", "n2"], [[1, 2, 3], [1, 2.5, 3]], ts=1.0)
    assert table.get("n1", now=2.0) is None
    too_long = r"row 1: key 'way-too-long' is too long .* nothing was stored"
    with pytest.raises(rtml.InputError, match=too_long):
        table.put_many(["n1", "way-too-long"], [[1, 2, 3], [1, 2, 3]], ts=1.0)
    assert table.get("n1", now=2.0) is None
    # Capacity: the rows before the refused one are stored, the rest are not.
    with pytest.raises(rtml.InputError, match=r"row 2 \(key 'c3'\): table full"):
        table.put_many(["c1", "c2", "c3", "c4"], np.ones((4, 3)), ts=1.0)
    assert table.get("c2", now=2.0) is not None and table.get("c4", now=2.0) is None
    assert len(table) == 3
    assert table.get("ok", now=2.0) == before


def test_schema_errors() -> None:
    store = rtml.FeatureStore()
    with pytest.raises(rtml.InputError, match="dtype"):
        store.table("x", key=str, fields={"a": "float16"})
    with pytest.raises(rtml.InputError, match="ttl"):
        store.table("x", key=str, fields={"a": "float32"}, ttl="soon")
    with pytest.raises(rtml.InputError, match="key must be"):
        store.table("x", key=float, fields={"a": "float32"})
    store.table("x", key=str, fields={"a": "float32"})
    with pytest.raises(rtml.InputError, match="already exists"):
        store.table("x", key=str, fields={"a": "float32"})
    with pytest.raises(rtml.InputError, match="no table or window set 'y'"):
        store["y"]


def test_sweep_frees_capacity() -> None:
    table = make_table(capacity=2, ttl="10s")
    table.put_many(["a", "b"], np.ones((2, 3)), ts=0.0)
    with pytest.raises(rtml.InputError, match="table full"):
        table.put("c", [1, 1, 1], ts=5.0)
    assert table.sweep(now=10.0) == 2
    table.put("c", [1, 1, 1], ts=11.0)
    assert table.get("c", now=12.0) is not None


def test_threads_never_read_a_torn_record() -> None:
    """Writers store (e, e + 1, e + 2) for event e; readers check it on every hit:
    over 10^7 record reads under continuous writes (batch calls run without the GIL,
    so readers and writers really overlap)."""
    table = make_table(ttl=None, key=int, capacity=2048)
    keys = np.arange(1024, dtype=np.int64)
    stop = threading.Event()
    bad: list[str] = []
    reads = [0, 0]
    step = np.arange(3, dtype=np.float64)

    def writer(offset: int) -> None:
        e = offset
        while not stop.is_set():
            e += 2
            rows = np.broadcast_to(e + step, (len(keys), 3))
            table.put_many(keys, rows, ts=np.full(len(keys), e * 1e-6))

    def reader(r: int) -> None:
        out = np.empty((len(keys), 3), dtype=np.float32)
        for _ in range(5000):
            found = table.get_many_into(keys, out, now=1e9)
            hit = out[found]
            if not ((hit[:, 1] == hit[:, 0] + 1) & (hit[:, 2] == hit[:, 0] + 2)).all():
                bad.append(repr(hit[:3]))
            reads[r] += len(keys)

    writers = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    readers = [threading.Thread(target=reader, args=(r,)) for r in range(2)]
    for t in writers + readers:
        t.start()
    for t in readers:
        t.join()
    stop.set()
    for t in writers:
        t.join()
    assert not bad, bad[:3]
    assert sum(reads) >= 10_000_000

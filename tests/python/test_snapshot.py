"""FeatureStore.save / load: exact round trips, damaged files refused whole, and one
point-in-time cut across tables while writers keep writing."""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

import rtml

WINDOW_OPS = ["count", "sum", "mean", "min", "max", "stddev", "last"]


def build_store(seed: int = 0) -> rtml.FeatureStore:
    rng = np.random.default_rng(seed)
    store = rtml.FeatureStore()
    cards = store.table(
        "card",
        key=str,
        fields={"avg": "float32", "n": "int32", "x": "float64"},
        ttl="1h",
        capacity=500,
        max_future="1000d",
    )
    keys = [f"card-{i}" for i in range(300)]
    cards.put_many(
        keys,
        np.column_stack([rng.random(300), rng.integers(0, 9, 300), rng.normal(size=300)]),
        ts=1000.0 + rng.random(300) * 100,
    )
    for k in keys[:40]:
        cards.delete(k)  # tombstones must not come back
    merchants = store.table("merchant", key=int, fields={"risk": "float64"}, capacity=100)
    merchants.put_many(np.arange(50, dtype=np.int64) * 7, rng.random((50, 1)), ts=5.0)
    txn = store.windows(
        "txn",
        key=str,
        value="amount",
        ops=WINDOW_OPS,
        windows=["1m", "10m", "1h"],
        bucket="10s",
        history="5m",
        capacity=100,
        max_future="1000d",
    )
    txn.ingest(
        [f"card-{i}" for i in rng.integers(0, 60, 3000)],
        rng.normal(50, 20, 3000),
        ts=1000.0 + rng.random(3000) * 4000,
    )
    return store


def assert_same(a: rtml.FeatureStore, b: rtml.FeatureStore) -> None:
    assert sorted(a.tables) == sorted(b.tables) and sorted(a.window_sets) == sorted(b.window_sets)
    for name, t in a.tables.items():
        u = b.tables[name]
        assert (t.columns, t.ttl_seconds, t.capacity, len(t)) == (
            u.columns,
            u.ttl_seconds,
            u.capacity,
            len(u),
        )
        assert sorted(t.items(now=0.0), key=repr) == sorted(u.items(now=0.0), key=repr)
    for name, w in a.window_sets.items():
        v = b.window_sets[name]
        assert (w.columns, w.layout, len(w), w.stats()) == (v.columns, v.layout, len(v), v.stats())
        keys = [f"card-{i}" for i in range(70)]
        for now in (1500.0, 4000.0, 4990.0, 5200.0, 9000.0):
            x, y = w.get_many(keys, now=now), v.get_many(keys, now=now)
            np.testing.assert_array_equal(x.values, y.values)  # NaN == NaN here
            np.testing.assert_array_equal(x.found, y.found)


def test_round_trip_is_exact(tmp_path: Path) -> None:
    store = build_store()
    path = tmp_path / "store.snap"
    store.save(path)
    loaded = rtml.FeatureStore.load(path)
    assert_same(store, loaded)
    # The loaded store is a working store: it takes writes and saves again.
    loaded["merchant"].put(1, {"risk": 1.0}, ts=6.0)
    loaded.save(path)
    assert rtml.FeatureStore.load(path)["merchant"].get(1, now=7.0) == {"risk": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["store.snap"]  # no temp files left


def test_empty_store_round_trips(tmp_path: Path) -> None:
    rtml.FeatureStore().save(tmp_path / "e.snap")
    loaded = rtml.FeatureStore.load(tmp_path / "e.snap")
    assert loaded.tables == {} and loaded.window_sets == {}


def small_snapshot(tmp_path: Path) -> bytes:
    store = rtml.FeatureStore()
    store.table("t", key=str, fields={"a": "float64"}, capacity=4).put_many(
        ["x", "y"], [[1.0], [2.0]], ts=1.0
    )
    store.windows("w", key=int, value="v", ops=["sum"], windows=["20s"], capacity=4).ingest(
        [1, 2], [3.0, 4.0], ts=1.0
    )
    store.save(tmp_path / "s.snap")
    return (tmp_path / "s.snap").read_bytes()


def test_every_truncation_and_byte_flip_is_refused(tmp_path: Path) -> None:
    good = small_snapshot(tmp_path)
    bad = tmp_path / "bad.snap"
    for n in range(len(good)):
        bad.write_bytes(good[:n])
        with pytest.raises(rtml.SnapshotError):
            rtml.FeatureStore.load(bad)
    for i in range(len(good)):
        flipped = bytearray(good)
        flipped[i] ^= 0x40
        bad.write_bytes(bytes(flipped))
        with pytest.raises(rtml.SnapshotError):
            rtml.FeatureStore.load(bad)
    with pytest.raises(rtml.SnapshotError, match="cannot read"):
        rtml.FeatureStore.load(tmp_path / "missing.snap")


def reseal(header_and_rest: bytes, manifest: bytes, body: bytes) -> bytes:
    """A file with a forged but valid checksum: only the section checks stand guard."""
    import hashlib

    digest = hashlib.blake2b(manifest + body, digest_size=16).digest()
    head = struct.pack("<8sIIQQ16s", b"RTMLSNAP", 1, 48, len(manifest), len(body), digest)
    return head + manifest + body


def test_forged_checksums_still_meet_section_checks(tmp_path: Path) -> None:
    import orjson

    good = small_snapshot(tmp_path)
    m_len, _ = struct.unpack_from("<QQ", good, 16)
    manifest = orjson.loads(good[48 : 48 + m_len])
    body = good[48 + m_len :]
    bad = tmp_path / "forged.snap"

    def load_with(man: dict, body_bytes: bytes, match: str) -> None:
        bad.write_bytes(reseal(good, orjson.dumps(man), body_bytes))
        with pytest.raises(rtml.SnapshotError, match=match):
            rtml.FeatureStore.load(bad)

    import copy

    m = copy.deepcopy(manifest)
    m["objects"][0]["spec"]["capacity"] = 1  # two records cannot fit
    load_with(m, body, "exceed the capacity")
    m = copy.deepcopy(manifest)
    m["objects"][0]["spec"]["fields"] = {"a": "float64", "b": "float64"}
    load_with(m, body, "field count")
    m = copy.deepcopy(manifest)
    m["objects"][1]["length"] += 8
    load_with(m, body + b"\0" * 8, "after the last record")
    m = copy.deepcopy(manifest)
    m["objects"][0]["offset"] = len(body)
    load_with(m, body, "outside the body")
    m = copy.deepcopy(manifest)
    m["objects"][0]["kind"] = "graph"
    load_with(m, body, "unknown kind")
    m = copy.deepcopy(manifest)
    del m["objects"][1]["spec"]["ops"]
    load_with(m, body, "invalid entry")
    # The same key twice in a section.
    t = manifest["objects"][0]
    section = bytearray(body[t["offset"] : t["offset"] + t["length"]])
    first_key_at = 24 + 8 + 4  # header, event time, key length
    section[first_key_at + 1 + 8 + 8 + 4] = section[first_key_at]  # second key := first key
    load_with(manifest, bytes(section) + body[t["length"] :], "duplicate key")
    future = bytearray(good)
    struct.pack_into("<I", future, 8, 2)
    bad.write_bytes(bytes(future))
    with pytest.raises(rtml.SnapshotError, match="newer rtml"):
        rtml.FeatureStore.load(bad)


def test_failed_save_keeps_the_old_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "keep.snap"
    store = build_store()
    store.save(path)
    before = path.read_bytes()
    os.chmod(tmp_path, 0o500)  # no new files (root ignores this: then skip)
    try:
        if os.access(tmp_path, os.W_OK):
            pytest.skip("running as root: directory permissions are not enforced")
        with pytest.raises(OSError):
            store.save(path)
    finally:
        os.chmod(tmp_path, 0o700)
    assert path.read_bytes() == before


def test_snapshot_is_one_cut_while_writers_write(tmp_path: Path) -> None:
    """Each writer step e does A.put(k, e), then W.ingest(k, 1 event), then B.put(k, e),
    in that order. Any point-in-time cut has B[k] <= count(W[k]) <= A[k]; a snapshot
    that copied tables one after another at different moments breaks it."""
    store = rtml.FeatureStore()
    a = store.table("a", key=int, fields={"e": "float64"}, capacity=300_000)
    b = store.table("b", key=int, fields={"e": "float64"}, capacity=300_000)
    w = store.windows(
        "w", key=int, value="v", ops=["count"], windows=["24h"], bucket="1h", capacity=16
    )
    filler = np.arange(1000, 250_000, dtype=np.int64)  # makes each table's scan take time
    a.put_many(filler, np.zeros((len(filler), 1)), ts=1.0)
    b.put_many(filler, np.zeros((len(filler), 1)), ts=1.0)
    stop = threading.Event()

    def writer(k: int) -> None:
        e = 0
        while not stop.is_set():
            e += 1
            a.put(k, {"e": float(e)}, ts=float(e))
            w.ingest(k, 1.0, ts=10.0)
            b.put(k, {"e": float(e)}, ts=float(e))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        checked = 0
        for i in range(6):
            path = tmp_path / f"cut{i}.snap"
            store.save(path)
            snap = rtml.FeatureStore.load(path)
            for k in range(4):
                got_a = snap["a"].get(k, now=1e6)
                got_b = snap["b"].get(k, now=1e6)
                count = snap["w"].get(k, now=20.0)["v_count_24h"]
                ea = got_a["e"] if got_a else 0.0
                eb = got_b["e"] if got_b else 0.0
                assert eb <= count <= ea, (i, k, eb, count, ea)
                checked += ea > 0
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert checked > 0

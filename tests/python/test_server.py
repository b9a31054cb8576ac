"""rtml.server over real loopback sockets, on uvloop and on asyncio's own loop.

Frames are built with the core codec (rtml._core.wire) and sent on raw sockets, so the
malformed-input suite can send exactly the bytes it means; rtml.Client has its own tests.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import xgboost as xgb

import rtml
from rtml._core import wire
from rtml.server import Server

OPS = wire.OPCODES
STATUS = wire.STATUS
NOW = 10_000.0  # the time every read is made at (seconds)


def _model(seed: int, n_trees: int = 8) -> rtml.Model:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(500, 4))
    y = (X[:, 0] + X[:, 2] - X[:, 3] > 0).astype(int)
    booster = xgb.XGBClassifier(n_estimators=n_trees, max_depth=3, random_state=seed).fit(X, y)
    return rtml.Model.load(booster, n_threads=1)


def _store() -> rtml.FeatureStore:
    store = rtml.FeatureStore()
    cards = store.table("card", key=str, fields={"limit": "float64", "n": "int32"})
    cards.put_many(["c1", "c2"], np.array([[500.0, 3], [80.0, 0]]), ts=NOW - 100)
    txn = store.windows("card_txn", key=str, value="amount", ops=["count", "sum"], windows=["1h"])
    txn.ingest(["c1", "c1", "c2"], [10.0, 20.0, 5.0], ts=[NOW - 60, NOW - 30, NOW - 10])
    return store


def _scorer(store: rtml.FeatureStore, model: rtml.Model) -> rtml.Scorer:
    inputs = {
        "f0": rtml.request("amount"),
        "f1": rtml.table("card", "limit", key="card_id"),
        "f2": rtml.window("card_txn", "amount_count_1h", key="card_id"),
        "f3": rtml.window("card_txn", "amount_sum_1h", key="card_id"),
    }
    return rtml.Scorer(model, store, inputs)


@pytest.fixture(params=["uvloop", "asyncio"])
def served(request):
    model, other = _model(1), _model(2)
    store = _store()
    scorer = _scorer(store, model)
    server = Server(
        store,
        scorers={"fraud": scorer},
        models={"m": model, "other": other},
        port=0,
        admin=True,
        loop=request.param,
        max_payload=1 << 16,
    )
    with server.start_in_thread() as srv:
        yield srv


def _connect(srv: Server) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _read_frames(sock: socket.socket, n: int) -> list[tuple[tuple, bytes]]:
    """Reads n response frames: [(header tuple, payload bytes)]; fewer if the server closes."""
    buf = bytearray()
    out: list[tuple[tuple, bytes]] = []
    while len(out) < n:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        buf += chunk
        frames, consumed = wire.split_frames(bytes(buf))
        for op, flags, status, rid, off, length in frames:
            out.append(((op, flags, status, rid), bytes(buf[off : off + length])))
        del buf[:consumed]
    return out


def _dec(decode, payload: bytes):
    """Runs a wire decoder on a whole payload (decoders take buffer, offset, length)."""
    return decode(payload, 0, len(payload))


def _call(sock: socket.socket, frame: bytes) -> tuple[tuple, bytes]:
    sock.sendall(frame)
    got = _read_frames(sock, 1)
    assert got, "the server closed the connection"
    return got[0]


def _score_frame(rid: int, card: str = "c1", amount: float = 1.5) -> bytes:
    return wire.encode_score(rid, "fraud", [card], np.array([amount]), now_ns=int(NOW * 1e9))


def _alive(srv: Server) -> None:
    """A fresh client still gets a correct answer."""
    with _connect(srv) as s:
        (op, _flags, status, rid), payload = _call(s, wire.encode_ping(99, b"ok?"))
        assert (op, status, rid) == (OPS["PING"], 0, 99)
        assert _dec(wire.decode_ping, payload) == b"ok?"


# -- every operation ----------------------------------------------------------------------


def test_ping_and_hello(served):
    with _connect(served) as s:
        (op, flags, status, rid), payload = _call(s, wire.encode_hello(1))
        assert (op, status, rid) == (OPS["HELLO"], 0, 1)
        assert flags & wire.FLAG_RESPONSE
        hello = _dec(wire.decode_hello_response, payload)
        assert hello["max_in_flight"] == served.max_in_flight
        assert hello["max_payload"] == served.max_payload
        (op, _, status, rid), payload = _call(s, wire.encode_ping(2, b"abc"))
        assert (op, status, rid, _dec(wire.decode_ping, payload)) == (OPS["PING"], 0, 2, b"abc")


def test_score_equals_in_process(served):
    scorer = served.scorers["fraud"]
    with _connect(served) as s:
        for card, amount in [("c1", 1.5), ("c2", -0.3), ("unknown", 0.0)]:
            (_, _, status, _), payload = _call(s, _score_frame(5, card, amount))
            assert status == 0
            got = _dec(wire.decode_score, payload)
            want = scorer.score({"card_id": card, "amount": amount}, now=NOW)
            assert got[-1] == pytest.approx(float(np.ravel(want)[-1]), abs=0, rel=0)


def test_score_batch_and_predict(served):
    scorer = served.scorers["fraud"]
    cards = ["c1", "c2", "c3", "c1"]
    amounts = np.array([0.5, -1.0, 2.0, 0.0])
    frame = wire.encode_score_batch(3, "fraud", [cards], amounts[:, None], now_ns=int(NOW * 1e9))
    with _connect(served) as s:
        (_, _, status, rid), payload = _call(s, frame)
        assert (status, rid) == (0, 3)
        values, row_status = _dec(wire.decode_score_batch, payload)
        want = scorer.score_many({"card_id": cards, "amount": amounts}, now=NOW)
        np.testing.assert_array_equal(
            values[:, -1], np.asarray(want).reshape(len(cards), -1)[:, -1]
        )
        assert not row_status.any()
        X = np.random.default_rng(0).normal(size=(7, 4))
        (_, _, status, _), payload = _call(s, wire.encode_predict(4, "m", X))
        assert status == 0
        got = _dec(wire.decode_predict, payload)
        np.testing.assert_array_equal(
            got[:, -1], np.asarray(served.models["m"].predict(X)).reshape(7, -1)[:, -1]
        )
        X32 = X.astype(np.float32)
        (_, _, status, _), payload = _call(s, wire.encode_predict(5, "m", X32))
        np.testing.assert_array_equal(
            _dec(wire.decode_predict, payload)[:, -1],
            np.asarray(served.models["m"].predict(X32)).reshape(7, -1)[:, -1],
        )


def test_feature_store_operations(served):
    store = served.store
    now_ns = int(NOW * 1e9)
    with _connect(served) as s:
        keys = ["c9", "c1"]
        values = np.array([[42.0, 7], [1.0, 1]])
        events = np.array([now_ns, now_ns - 10**12], dtype=np.int64)  # c1's is older: stale
        (_, _, status, _), payload = _call(
            s, wire.encode_put_features(1, "card", keys, values, events)
        )
        assert status == 0
        assert _dec(wire.decode_put_features, payload).tolist() == [0, 1]
        assert store["card"].get("c9", now=NOW) == {"limit": 42.0, "n": 7}
        (_, _, status, _), payload = _call(
            s, wire.encode_get_features(2, "card", ["c9", "nope"], now_ns)
        )
        vals, found, event_ns = _dec(wire.decode_get_features, payload)
        assert found.tolist() == [True, False]
        assert vals[0].tolist() == [42.0, 7.0] and np.isnan(vals[1]).all()
        assert event_ns[0] == now_ns
        ev = np.array([now_ns - 5 * 10**9, 1], dtype=np.int64)  # the second is far too old
        (_, _, status, _), payload = _call(
            s, wire.encode_ingest(3, "card_txn", ["c2", "c2"], np.array([4.0, 9.0]), ev)
        )
        assert status == 0
        assert tuple(_dec(wire.decode_ingest, payload)) == (1, 1)
        assert store["card_txn"].get("c2", now=NOW)["amount_count_1h"] == 2.0
        # bad input is refused whole, naming the problem
        bad = wire.encode_put_features(4, "card", ["c5"], np.array([[1.0, 0.5]]), events[:1])
        (_, _, status, _), payload = _call(s, bad)
        assert status == STATUS["BAD_VALUE"] and "integer" in _dec(wire.decode_error, payload)
        assert store["card"].get("c5", now=NOW) is None
        far = np.array([time.time_ns() + 10**15], dtype=np.int64)
        frame = wire.encode_ingest(5, "card_txn", ["c2"], np.array([1.0]), far)
        (_, _, status, _), payload = _call(s, frame)
        assert status == STATUS["BAD_VALUE"] and "max_future" in _dec(wire.decode_error, payload)


def test_stats_and_model_swap(served):
    import orjson

    with _connect(served) as s:
        (_, _, status, _), payload = _call(s, wire.encode_stats(1, ""))
        assert status == 0, _dec(wire.decode_error, payload)
        doc = orjson.loads(_dec(wire.decode_stats, payload))
        assert doc["scorers"]["fraud"]["keys"] == ["card_id"]
        assert doc["scorers"]["fraud"]["fields"] == ["amount"]
        assert set(doc["tables"]) == {"card"} and set(doc["models"]) == {"m", "other"}
        (_, _, status, _), payload = _call(s, wire.encode_stats(2, "nothing"))
        assert status == STATUS["NOT_FOUND"]
        before = _dec(wire.decode_score, _call(s, _score_frame(3))[1])
        (_, _, status, _), payload = _call(s, wire.encode_model_swap(4, "fraud", "other"))
        assert status == 0, _dec(wire.decode_error, payload)
        after = _dec(wire.decode_score, _call(s, _score_frame(5))[1])
        assert after[-1] != before[-1]
        (_, _, status, _), payload = _call(s, wire.encode_model_swap(6, "fraud", "missing"))
        assert status == STATUS["NOT_FOUND"]


def test_errors_name_the_problem_and_keep_the_connection(served):
    with _connect(served) as s:
        cases = [
            (wire.encode_score(1, "nope", ["c1"], np.array([1.0])), "NOT_FOUND", "nope"),
            (wire.encode_score(2, "fraud", [7], np.array([1.0])), "BAD_KEY_KIND", "string"),
            (wire.encode_score(3, "fraud", ["c1"], np.array([1.0, 2.0])), "BAD_SHAPE", "fields"),
            (wire.encode_predict(4, "m", np.zeros((2, 3))), "BAD_SHAPE", "4 columns"),
            (wire.encode_get_features(5, "none", ["a"]), "NOT_FOUND", "none"),
        ]
        for frame, status_name, text in cases:
            (_, flags, status, _), payload = _call(s, frame)
            assert status == STATUS[status_name]
            assert not flags & wire.FLAG_CLOSING
            assert text in _dec(wire.decode_error, payload)
        unknown = bytearray(wire.encode_ping(6))
        unknown[6:8] = (0x0150).to_bytes(2, "little")  # a reserved (learning) opcode
        (_, _, status, rid), _ = _call(s, bytes(unknown))
        assert (status, rid) == (STATUS["UNKNOWN_OPCODE"], 6)
        (_, _, status, _), _ = _call(s, wire.encode_ping(7))
        assert status == 0


def test_pipelining_answers_in_order(served):
    frames = [
        _score_frame(i, f"c{i % 3}", float(i)) if i % 2 else wire.encode_ping(i, b"%d" % i)
        for i in range(500)
    ]
    with _connect(served) as s:
        s.sendall(b"".join(frames))
        got = _read_frames(s, len(frames))
    assert [h[3] for h, _ in got] == list(range(500))
    assert all(h[2] == 0 for h, _ in got)
    assert all(h[0] == (OPS["SCORE"] if h[3] % 2 else OPS["PING"]) for h, _ in got)


def test_many_concurrent_connections(served):
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with _connect(served) as s:
                for j in range(20):
                    (_, _, status, rid), payload = _call(s, wire.encode_ping(j, b"x%d" % i))
                    assert (status, rid, _dec(wire.decode_ping, payload)) == (0, j, b"x%d" % i)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# -- malformed input ----------------------------------------------------------------------


def test_every_prefix_then_abrupt_close(served):
    frame = _score_frame(11)
    for cut in range(len(frame)):
        with _connect(served) as s:
            s.sendall(frame[:cut])
    _alive(served)


def test_every_single_byte_corruption(served):
    frame = _score_frame(12)
    for pos in range(len(frame)):
        bad = bytearray(frame)
        bad[pos] ^= 0xA5
        with _connect(served) as s:
            s.sendall(bytes(bad) + wire.encode_ping(13))
            s.shutdown(socket.SHUT_WR)
            got = _read_frames(s, 2)
        # Every answer is a response; the last either answers the PING or closes the
        # connection (a header that cannot be trusted, or a frame cut by the close).
        assert got, f"no answer at byte {pos}"
        assert all(h[1] & wire.FLAG_RESPONSE for h, _ in got), pos
        (op, flags, status, _), _ = got[-1]
        assert (op == OPS["PING"] and status == 0) or flags & wire.FLAG_CLOSING, pos
    _alive(served)


def test_lying_and_oversized_lengths(served):
    frame = bytearray(wire.encode_ping(1, b"abcd"))
    frame[20:24] = (100).to_bytes(4, "little")  # claims 100 bytes, 4 follow, then close
    with _connect(served) as s:
        s.sendall(bytes(frame))
    huge = bytearray(wire.encode_ping(2))
    huge[20:24] = (1 << 30).to_bytes(4, "little")
    with _connect(served) as s:
        s.sendall(bytes(huge))
        got = _read_frames(s, 2)
        assert len(got) == 1
        (_, flags, status, _), _ = got[0]
        assert status == STATUS["FRAME_TOO_LARGE"] and flags & wire.FLAG_CLOSING
        assert s.recv(10) == b""  # closed
    with _connect(served) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        (_op, flags, status, _), _ = _read_frames(s, 1)[0]
        assert status == STATUS["BAD_MAGIC"]
    _alive(served)


def test_slow_client_one_byte_at_a_time(served):
    frame = _score_frame(21) + wire.encode_ping(22, b"slow")
    with _connect(served) as s:
        for b in frame:
            s.sendall(bytes([b]))
        got = _read_frames(s, 2)
    assert [h[3] for h, _ in got] == [21, 22]
    assert all(h[2] == 0 for h, _ in got)


def test_random_garbage_never_hurts_the_server(served):
    rng = np.random.default_rng(5)
    valid = _score_frame(1) + wire.encode_ping(2)
    for i in range(60):
        data = bytearray(valid if i % 2 else rng.integers(0, 256, 64, dtype=np.uint8).tobytes())
        for _ in range(int(rng.integers(1, 6))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        with _connect(served) as s:
            s.sendall(bytes(data))
            s.shutdown(socket.SHUT_WR)
            _read_frames(s, 3)
    _alive(served)


# -- model swap under load, auth, drain -------------------------------------------------


def test_model_swap_under_load_has_zero_failures(served):
    model, other = served.models["m"], served.models["other"]
    scorer = served.scorers["fraud"]
    req = {"card_id": "c1", "amount": 0.7}
    allowed = set()
    for m in (model, other):
        scorer.swap_model(m)
        allowed.add(float(np.ravel(scorer.score(req, now=NOW))[-1]))
    assert len(allowed) == 2
    stop = threading.Event()
    failures: list[str] = []
    counts = [0, 0]

    def client(k: int) -> None:
        with _connect(served) as s:
            while not stop.is_set():
                s.sendall(b"".join(_score_frame(j, "c1", 0.7) for j in range(16)))
                for (_, _, status, _), payload in _read_frames(s, 16):
                    if status != 0 or float(_dec(wire.decode_score, payload)[-1]) not in allowed:
                        failures.append(f"status {status}")
                    counts[k] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    with _connect(served) as admin:
        for i in range(100):
            name = "other" if i % 2 == 0 else "m"
            (_, _, status, _), payload = _call(
                admin, wire.encode_model_swap(1000 + i, "fraud", name)
            )
            assert status == 0, _dec(wire.decode_error, payload)
    stop.set()
    for t in threads:
        t.join()
    assert not failures
    assert min(counts) > 0


def test_non_loopback_needs_a_token_and_admin_needs_admin():
    with pytest.raises(rtml.InputError, match="token"):
        Server(port=0, host="0.0.0.0")
    srv = Server(_store(), port=0, token="s3cret")
    with srv.start_in_thread():
        with _connect(srv) as s:
            (_, flags, status, _), _ = _call(s, wire.encode_ping(1))
            assert status == STATUS["UNAUTHORIZED"] and flags & wire.FLAG_CLOSING
        with _connect(srv) as s:
            (_, _, status, _), _ = _call(s, wire.encode_hello(1, "wrong"))
            assert status == STATUS["UNAUTHORIZED"]
        with _connect(srv) as s:
            assert _call(s, wire.encode_hello(1, "s3cret"))[0][2] == 0
            assert _call(s, wire.encode_ping(2))[0][2] == 0
            # admin operations are off on this server
            (_, _, status, _), _ = _call(s, wire.encode_model_swap(3, "fraud", "m"))
            assert status == STATUS["UNAUTHORIZED"]


def test_sigterm_drains_in_flight_requests(tmp_path):
    config = tmp_path / "rtml.toml"
    config.write_text('[tables.card]\nkey = "str"\nfields = { limit = "float64" }\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtml", "serve", "--config", str(config), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "listening on" in line, line + proc.stderr.read()
        port = int(line.split("listening on ")[1].split(";")[0].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            frames = [wire.encode_ping(i, b"p") for i in range(2000)]
            s.sendall(b"".join(frames[:1000]))
            proc.send_signal(signal.SIGTERM)
            s.sendall(b"".join(frames[1000:]))
            got = _read_frames(s, 2000)
            assert [h[3] for h, _ in got] == list(range(len(got)))
            assert len(got) == 2000
            assert all(h[2] == 0 for h, _ in got)
            assert s.recv(10) == b""  # then the server closes
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # reap it and close its pipes


def test_backpressure_bounds_a_client_that_does_not_read():
    high = 256 << 10
    srv = Server(port=0, write_buffer_high=high, max_in_flight=64)
    payload = b"x" * 4000
    n = 5_000  # ~20 MB of answers the client does not read at first
    with srv.start_in_thread(), _connect(srv) as s:
        sender = threading.Thread(
            target=lambda: s.sendall(b"".join(wire.encode_ping(i, payload) for i in range(n)))
        )
        sender.start()
        time.sleep(1.0)
        (conn,) = list(srv._connections)
        # The server stopped reading: its pending output stays near the high-water
        # mark (plus one batch), not the 20 MB the client asked for.
        pending = conn.transport.get_write_buffer_size()
        assert pending <= high + 64 * (len(payload) + 64), pending
        assert conn.buffered_bytes() < 1 << 20
        got = _read_frames(s, n)
        sender.join()
    assert [h[3] for h, _ in got] == list(range(n))

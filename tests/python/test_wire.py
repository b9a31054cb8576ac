"""The wire codec's Python face (rtml._core.wire): every request encoder checked
byte for byte against a straightforward Python rendering of docs/protocol.md,
split_frames' header fields, every decoder on hand-built payloads, argument
errors (InputError) and malformed payloads (ProtocolError), then random and
mutated bytes through split_frames and every decoder: each call returns or
raises ProtocolError / InputError, nothing else.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtml._core import InputError, RtmlError, wire

OP = wire.OPCODES
ProtocolError = wire.ProtocolError


# ---- A Python rendering of docs/protocol.md (the oracle) ----


def frame(opcode: int, rid: int, payload: bytes, flags: int = 0, status: int = 0) -> bytes:
    head = struct.pack("<4sBBHHHQI", b"RTML", 1, 0, opcode, flags, status, rid, len(payload))
    return head + payload


def response(name: str, rid: int, payload: bytes) -> bytes:
    return frame(OP[name], rid, payload, flags=wire.FLAG_RESPONSE)


def str16(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<H", len(b)) + b


def key_column(keys: list[Any]) -> bytes:
    if keys and isinstance(keys[0], str):
        return b"\x01" + b"".join(str16(k) for k in keys)
    return b"\x00" + np.asarray(keys, dtype="<i8").tobytes()


def f64(values: Any) -> bytes:
    return np.ascontiguousarray(values, dtype="<f8").tobytes()


def i64(values: Any) -> bytes:
    return np.ascontiguousarray(values, dtype="<i8").tobytes()


def only_frame(buf: Any) -> tuple[int, int, int, int, int, int]:
    frames, consumed = wire.split_frames(buf)
    assert len(frames) == 1
    assert consumed == len(buf)
    return frames[0]


def decode(decoder: Callable[..., Any], buf: bytes) -> Any:
    *_, offset, length = only_frame(buf)
    return decoder(buf, offset, length)


# ---- Constants ----


def test_constants_come_from_the_shared_lists() -> None:
    assert OP["HELLO"] == 1 and OP["SCORE"] == 0x10 and OP["MODEL_SWAP"] == 0x41
    assert len(OP) == 11
    assert wire.STATUS["OK"] == 0 and wire.STATUS["TABLE_FULL"] == 128
    names = {v: k for k, v in wire.STATUS.items()}
    assert {names[c] for c in wire.FATAL} == {
        "BAD_MAGIC",
        "UNSUPPORTED_VERSION",
        "FRAME_TOO_LARGE",
        "UNAUTHORIZED",
    }
    assert isinstance(wire.FATAL, frozenset)
    assert wire.HEADER_SIZE == 24
    assert struct.pack("<I", wire.MAGIC) == b"RTML"
    assert wire.VERSION == (1, 0)
    assert (wire.FLAG_RESPONSE, wire.FLAG_CLOSING) == (1, 2)
    assert wire.DEFAULT_MAX_PAYLOAD == 16 << 20
    assert issubclass(ProtocolError, RtmlError)


# ---- Requests: byte layouts and split_frames ----

FIELDS = np.array([[1.5, -0.0], [np.nan, 1e300], [3.0, 4.0]])
EVENT_NS = np.array([1_000, 0, -5], dtype=np.int64)

REQUESTS: list[tuple[str, bytes, bytes]] = [
    ("HELLO", wire.encode_hello(1, "tok"), b"\x01\x00\x00\x00" + str16("tok")),
    ("HELLO", wire.encode_hello(1), b"\x01\x00\x00\x00" + str16("")),
    ("PING", wire.encode_ping(2, b"hi"), b"hi"),
    ("PING", wire.encode_ping(2), b""),
    (
        "SCORE",
        wire.encode_score(3, "fraud", [7, "card-1", np.int64(-2)], [0.5, 2], now_ns=42),
        str16("fraud")
        + i64([42])
        + b"\x03\x00"
        + b"\x00"
        + i64([7])
        + b"\x01"
        + str16("card-1")
        + b"\x00"
        + i64([-2])
        + struct.pack("<I", 2)
        + f64([0.5, 2]),
    ),
    (
        "SCORE_BATCH",
        wire.encode_score_batch(4, "fraud", [[1, 2, 3], np.array(["a", "", "ccc"])], FIELDS),
        str16("fraud")
        + i64([0])
        + struct.pack("<IHI", 3, 2, 2)
        + key_column([1, 2, 3])
        + key_column(["a", "", "ccc"])
        + f64(FIELDS),
    ),
    (
        "SCORE_BATCH",
        wire.encode_score_batch(4, "s", [], np.zeros((0, 3)), now_ns=-1),
        str16("s") + i64([-1]) + struct.pack("<IHI", 0, 0, 3),
    ),
    (
        "PREDICT",
        wire.encode_predict(5, "m", np.arange(6, dtype=np.float32).reshape(2, 3)),
        str16("m") + struct.pack("<BBII", 0, 0, 2, 3) + np.arange(6, dtype="<f4").tobytes(),
    ),
    (
        "PREDICT",
        wire.encode_predict(5, "m", [[1, 2]]),
        str16("m") + struct.pack("<BBII", 1, 0, 1, 2) + f64([1, 2]),
    ),
    (
        "GET_FEATURES",
        wire.encode_get_features(6, "users", ["u1", "user-22"], now_ns=99),
        str16("users") + i64([99]) + struct.pack("<I", 2) + key_column(["u1", "user-22"]),
    ),
    (
        "GET_FEATURES",
        wire.encode_get_features(6, "cards", np.array([5, -6])),
        str16("cards") + i64([0]) + struct.pack("<I", 2) + key_column([5, -6]),
    ),
    (
        "GET_FEATURES",
        wire.encode_get_features(6, "cards", []),
        str16("cards") + i64([0]) + struct.pack("<I", 0) + b"\x00",
    ),
    (
        "PUT_FEATURES",
        wire.encode_put_features(7, "cards", [1, 2, 3], FIELDS, EVENT_NS),
        str16("cards")
        + struct.pack("<II", 3, 2)
        + key_column([1, 2, 3])
        + i64(EVENT_NS)
        + f64(FIELDS),
    ),
    (
        "INGEST",
        wire.encode_ingest(8, "spend", ["a", "b"], [1.0, 2.5], [10, 20]),
        str16("spend")
        + struct.pack("<I", 2)
        + key_column(["a", "b"])
        + i64([10, 20])
        + f64([1, 2.5]),
    ),
    ("STATS", wire.encode_stats(9), str16("")),
    ("STATS", wire.encode_stats(9, "fraud"), str16("fraud")),
    (
        "MODEL_LOAD",
        wire.encode_model_load(10, "gbm", path="/m/gbm.rtml"),
        str16("gbm") + b"\x00" + str16("/m/gbm.rtml"),
    ),
    (
        "MODEL_LOAD",
        wire.encode_model_load(10, "gbm", data=b"RTMF\x00\x01"),
        str16("gbm") + b"\x01" + struct.pack("<I", 6) + b"RTMF\x00\x01",
    ),
    (
        "MODEL_SWAP",
        wire.encode_model_swap(11, "fraud", "gbm", role=1, arm="b"),
        str16("fraud") + str16("gbm") + b"\x01" + str16("b"),
    ),
    (
        "MODEL_SWAP",
        wire.encode_model_swap(11, "fraud", "gbm"),
        str16("fraud") + str16("gbm") + b"\x00" + str16(""),
    ),
]


@pytest.mark.parametrize(("name", "encoded", "payload"), REQUESTS)
def test_request_encoders_write_the_documented_layout(
    name: str, encoded: bytes, payload: bytes
) -> None:
    rid = struct.unpack_from("<Q", encoded, 12)[0]
    assert encoded == frame(OP[name], rid, payload)
    opcode, flags, status, got_rid, offset, length = only_frame(encoded)
    assert (opcode, flags, status, got_rid) == (OP[name], 0, 0, rid)
    assert (offset, length) == (wire.HEADER_SIZE, len(payload))


def test_split_frames_reads_any_buffer_in_place_and_stops_at_a_partial_frame() -> None:
    stream = b"".join(encoded for _, encoded, _ in REQUESTS)
    for buf in (stream, bytearray(stream), memoryview(stream), memoryview(bytearray(stream))):
        frames, consumed = wire.split_frames(buf)
        assert consumed == len(stream) and len(frames) == len(REQUESTS)
    first, second = REQUESTS[4][1], REQUESTS[5][1]
    pair = first + second
    for cut in range(len(pair)):
        frames, consumed = wire.split_frames(pair[:cut])
        assert len(frames) == (cut >= len(first)) + (cut == len(pair))
        assert consumed == (len(first) if cut >= len(first) else 0)
    # Offsets point into the buffer given, also past a consumed prefix.
    frames, _ = wire.split_frames(memoryview(pair)[len(first) :])
    assert frames[0][4] == wire.HEADER_SIZE


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/1.1\r\n", "BAD_MAGIC"),
        (b"R", None),  # a true prefix waits
        (b"RTMX", "BAD_MAGIC"),
        (b"RTML\x02", "UNSUPPORTED_VERSION"),
        (frame(1, 0, b"")[:20] + struct.pack("<I", (16 << 20) + 1), "FRAME_TOO_LARGE"),
    ],
)
def test_split_frames_fatal_errors(data: bytes, status: str | None) -> None:
    if status is None:
        assert wire.split_frames(data) == ([], 0)
        return
    with pytest.raises(ProtocolError) as err:
        wire.split_frames(data)
    code, message = err.value.args
    assert code == wire.STATUS[status] and code in wire.FATAL
    assert err.value.status == code and str(err.value) == message and message.startswith(status)


def test_split_frames_max_payload() -> None:
    big = wire.encode_ping(1, b"x" * 100)
    assert len(wire.split_frames(big, 100)[0]) == 1
    with pytest.raises(ProtocolError, match="above max_payload=99"):
        wire.split_frames(big, max_payload=99)


# ---- Responses ----


def test_decode_responses_of_every_message() -> None:
    hello = b"\x01\x00\x00\x00" + struct.pack("<II", 1 << 20, 128) + str16("rtml/test")
    assert decode(wire.decode_hello_response, response("HELLO", 1, hello)) == {
        "major": 1,
        "minor": 0,
        "max_payload": 1 << 20,
        "max_in_flight": 128,
        "server": "rtml/test",
    }
    assert decode(wire.decode_ping, response("PING", 2, b"echo")) == b"echo"
    out = decode(wire.decode_score, response("SCORE", 3, b"\x02\x00" + f64([0.25, 0.75])))
    assert out.dtype == np.float64 and out.tolist() == [0.25, 0.75]

    batch = struct.pack("<IHH", 3, 2, 0) + f64(FIELDS) + bytes([0, 64, 0])
    values, status = decode(wire.decode_score_batch, response("SCORE_BATCH", 4, batch))
    np.testing.assert_array_equal(values, FIELDS)
    assert status.dtype == np.uint8 and status.tolist() == [0, 64, 0]

    pred = struct.pack("<II", 3, 2) + f64(FIELDS)
    np.testing.assert_array_equal(decode(wire.decode_predict, response("PREDICT", 5, pred)), FIELDS)

    get = struct.pack("<II", 3, 2) + bytes([1, 0, 1]) + i64(EVENT_NS) + f64(FIELDS)
    values, found, event_ns = decode(wire.decode_get_features, response("GET_FEATURES", 6, get))
    np.testing.assert_array_equal(values, FIELDS)
    assert found.dtype == np.bool_ and found.tolist() == [True, False, True]
    assert event_ns.dtype == np.int64 and event_ns.tolist() == EVENT_NS.tolist()

    put = struct.pack("<I", 3) + bytes([0, 1, 128])
    status = decode(wire.decode_put_features, response("PUT_FEATURES", 7, put))
    assert status.dtype == np.uint8 and status.tolist() == [0, 1, 128]

    ingest = struct.pack("<II", 5, 2)
    assert decode(wire.decode_ingest, response("INGEST", 8, ingest)) == (5, 2)


def test_server_side_response_encoders_round_trip() -> None:
    doc = b'{"scorers": {}}'
    for json in (doc, doc.decode()):
        encoded = wire.encode_stats_response(9, json)
        assert encoded == response("STATS", 9, struct.pack("<I", len(doc)) + doc)
        assert decode(wire.decode_stats, encoded) == doc
    encoded = wire.encode_model_load_response(10, "v-abc")
    assert encoded == response("MODEL_LOAD", 10, str16("v-abc"))
    assert decode(wire.decode_model_load, encoded) == "v-abc"
    encoded = wire.encode_model_swap_response(11, "v-old")
    assert decode(wire.decode_model_swap, encoded) == "v-old"

    encoded = wire.encode_error(OP["SCORE"], 12, wire.STATUS["NOT_FOUND"], "scorer 'x' not found")
    opcode, flags, status, rid, offset, length = only_frame(encoded)
    assert (opcode, flags, status, rid) == (OP["SCORE"], wire.FLAG_RESPONSE, 64, 12)
    assert wire.decode_error(encoded, offset, length) == "scorer 'x' not found"
    closing = wire.encode_error(0, 0, wire.STATUS["BAD_MAGIC"], "é" * 3000, closing=True)
    _, flags, *_, offset, length = only_frame(closing)
    assert flags == wire.FLAG_RESPONSE | wire.FLAG_CLOSING
    message = wire.decode_error(closing, offset, length)
    assert message == "é" * 2048  # cut to 4096 bytes on a character boundary


def test_request_decoders_for_python_handlers() -> None:
    assert decode(wire.decode_stats_request, wire.encode_stats(1, "fraud")) == "fraud"
    payload = wire.encode_stats(1, "fraud")[wire.HEADER_SIZE :]
    assert wire.decode_stats_request(payload) == "fraud"  # a lone payload
    assert wire.decode_stats_request(memoryview(b"xx" + payload), 2) == "fraud"
    assert decode(wire.decode_stats_request, wire.encode_stats(1)) == ""
    load = wire.encode_model_load(2, "gbm", path="/m/gbm.rtml")
    assert decode(wire.decode_model_load_request, load) == ("gbm", "/m/gbm.rtml", None)
    load = wire.encode_model_load(2, "gbm", data=bytearray(b"\x00\x01"))
    assert decode(wire.decode_model_load_request, load) == ("gbm", None, b"\x00\x01")
    swap = wire.encode_model_swap(3, "fraud", "gbm", role=1, arm="b")
    assert decode(wire.decode_model_swap_request, swap) == ("fraud", "gbm", 1, "b")


def test_decoders_read_a_payload_inside_a_larger_buffer() -> None:
    stream = bytearray(wire.encode_ping(1) + wire.encode_stats_response(2, b"{}"))
    frames, _ = wire.split_frames(stream)
    *_, offset, length = frames[1]
    assert wire.decode_stats(memoryview(stream), offset, length) == b"{}"
    with pytest.raises(InputError, match="outside the buffer"):
        wire.decode_stats(stream, offset, length + 1)
    with pytest.raises(InputError, match="outside the buffer"):
        wire.decode_stats(stream, len(stream) + 1)


# ---- Argument errors ----


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: wire.encode_get_features(1, "t", [1, "a"]), "one kind"),
        (lambda: wire.encode_get_features(1, "t", ["a", 1]), "one kind"),
        (lambda: wire.encode_get_features(1, "t", [1, 2.5]), "keys"),
        (lambda: wire.encode_get_features(1, "t", [True]), "keys"),
        (lambda: wire.encode_get_features(1, "t", "abc"), "single str"),
        (lambda: wire.encode_get_features(1, "t", ["k" * 70000]), "at most 65535"),
        (lambda: wire.encode_get_features(1, "t", np.zeros((2, 2), np.int64)), "1-D"),
        (lambda: wire.encode_get_features(1, "t", np.array([1.5])), "dtype float64"),
        (lambda: wire.encode_get_features(1, b"t", [1]), "table: expected str"),
        (lambda: wire.encode_get_features(1, "t" * 70000, [1]), "table"),
        (lambda: wire.encode_score(1, "s", "ab", [1.0]), "got a str"),
        (lambda: wire.encode_score(1, "s", [None], [1.0]), "expected int or str"),
        (lambda: wire.encode_score(1, "s", [2**63], [1.0]), "outside int64"),
        (lambda: wire.encode_score(1, "s", [1], [[1.0]]), "1-D"),
        (lambda: wire.encode_score(1, "s", [1], ["x"]), "fields"),
        (lambda: wire.encode_score_batch(1, "s", [[1, 2]], np.zeros((3, 1))), "2 keys for 3 rows"),
        (lambda: wire.encode_score_batch(1, "s", [[1]], np.zeros(3)), "2-D"),
        (lambda: wire.encode_predict(1, "m", np.zeros(3)), "2-D"),
        (lambda: wire.encode_predict(1, "m", np.array([["a"]])), "dtype"),
        (lambda: wire.encode_predict(1, "m", np.zeros((2, 0))), "without columns"),
        (lambda: wire.encode_put_features(1, "t", [1], np.zeros((2, 1)), [0]), "2 rows"),
        (lambda: wire.encode_put_features(1, "t", [1], np.zeros((1, 1)), [0.5]), "int64"),
        (lambda: wire.encode_put_features(1, "t", [1], np.zeros((1, 1)), [0, 1]), "1 times"),
        (lambda: wire.encode_ingest(1, "w", [1, 2], [1.0], [0, 0]), "one per key"),
        (lambda: wire.encode_model_load(1, "m"), "exactly one"),
        (lambda: wire.encode_model_load(1, "m", path="p", data=b""), "exactly one"),
        (lambda: wire.encode_model_load(1, "m", path="p" * 4097), "at most 4096"),
        (lambda: wire.encode_model_load(1, "m", data="not bytes"), "bytes-like"),
        (lambda: wire.encode_model_swap(1, "s", "m", role=2), "role"),
        (lambda: wire.encode_ping(1, "str"), "bytes-like"),
        (lambda: wire.encode_error(1, 1, 0, "ok is not an error"), "nonzero"),
        (lambda: wire.split_frames("text"), "bytes-like"),
    ],
)
def test_bad_arguments_raise_input_error(call: Callable[[], Any], match: str) -> None:
    with pytest.raises(InputError, match=match):
        call()


def test_keys_accept_lists_and_numpy_arrays_alike() -> None:
    ints = wire.encode_get_features(1, "t", [1, 2])
    assert wire.encode_get_features(1, "t", np.array([1, 2], dtype=np.int32)) == ints
    assert wire.encode_get_features(1, "t", (k for k in (1, 2))) == ints
    strs = wire.encode_get_features(1, "t", ["a", "bé"])
    assert wire.encode_get_features(1, "t", np.array(["a", "bé"])) == strs
    assert wire.encode_get_features(1, "t", np.array(["a", "bé"], dtype=object)) == strs


# ---- Malformed payloads ----


@pytest.mark.parametrize(
    ("decoder", "name", "payload", "status"),
    [
        (wire.decode_score, "SCORE", b"\x02\x00" + f64([1.0]), "MALFORMED"),
        (wire.decode_score, "SCORE", b"\x01\x00" + f64([1.0]) + b"\x00", "MALFORMED"),
        (wire.decode_score_batch, "SCORE_BATCH", struct.pack("<IHH", 2**32 - 1, 9, 0), "MALFORMED"),
        (wire.decode_score_batch, "SCORE_BATCH", struct.pack("<IHH", 0, 0, 1), "MALFORMED"),
        (wire.decode_predict, "PREDICT", struct.pack("<II", 2**31, 2**31), "MALFORMED"),
        (
            wire.decode_get_features,
            "GET_FEATURES",
            struct.pack("<II", 1, 0) + b"\x02" + i64([0]),
            "MALFORMED",
        ),
        (wire.decode_put_features, "PUT_FEATURES", struct.pack("<I", 4) + b"\x00", "MALFORMED"),
        (wire.decode_ingest, "INGEST", struct.pack("<I", 4), "MALFORMED"),
        (wire.decode_stats, "STATS", struct.pack("<I", 2**31) + b"{}", "MALFORMED"),
        (wire.decode_model_load, "MODEL_LOAD", str16("v") + b"\x00", "MALFORMED"),
        (wire.decode_model_load, "MODEL_LOAD", b"\x02\x00\xff\xfe", "MALFORMED"),
        (wire.decode_model_swap, "MODEL_SWAP", str16("x" * 300), "STRING_TOO_LONG"),
        (wire.decode_hello_response, "HELLO", b"\x01\x00\x00\x00", "MALFORMED"),
        (wire.decode_error, "SCORE", b"\x05\x00ab", "MALFORMED"),
        (wire.decode_model_load_request, "MODEL_LOAD", str16("m") + b"\x07", "BAD_VALUE"),
        (
            wire.decode_model_swap_request,
            "MODEL_SWAP",
            str16("s") + str16("m") + b"\x02",
            "BAD_VALUE",
        ),
        (wire.decode_stats_request, "STATS", b"", "MALFORMED"),
    ],
)
def test_malformed_payloads_raise_protocol_error(
    decoder: Callable[..., Any], name: str, payload: bytes, status: str
) -> None:
    with pytest.raises(ProtocolError) as err:
        decode(decoder, response(name, 1, payload))
    assert err.value.args[0] == wire.STATUS[status]
    assert err.value.args[1].startswith(status)


# ---- Every prefix, every corruption, random bytes ----

RESPONSES = [
    response("HELLO", 1, b"\x01\x00\x00\x00" + struct.pack("<II", 1 << 20, 8) + str16("rtml")),
    response("SCORE", 3, b"\x01\x00" + f64([0.5])),
    response("SCORE_BATCH", 4, struct.pack("<IHH", 2, 1, 0) + f64([1, 2]) + b"\x00\x08"),
    response("PREDICT", 5, struct.pack("<II", 1, 2) + f64([1, 2])),
    response("GET_FEATURES", 6, struct.pack("<II", 2, 1) + b"\x01\x00" + i64([5, 0]) + f64([1, 0])),
    response("PUT_FEATURES", 7, struct.pack("<I", 2) + b"\x00\x01"),
    response("INGEST", 8, struct.pack("<II", 1, 0)),
    wire.encode_stats_response(9, b'{"a": 1}'),
    wire.encode_model_load_response(10, "v1"),
    wire.encode_model_swap_response(11, "v0"),
    wire.encode_error(OP["SCORE"], 12, 64, "nope"),
]
VALID = [encoded for _, encoded, _ in REQUESTS] + RESPONSES

DECODERS = [
    wire.decode_hello_response,
    wire.decode_ping,
    wire.decode_score,
    wire.decode_score_batch,
    wire.decode_predict,
    wire.decode_get_features,
    wire.decode_put_features,
    wire.decode_ingest,
    wire.decode_stats,
    wire.decode_model_load,
    wire.decode_model_swap,
    wire.decode_error,
    wire.decode_stats_request,
    wire.decode_model_load_request,
    wire.decode_model_swap_request,
]


def feed(data: bytes) -> None:
    """split_frames and every decoder on data: returns or raises ProtocolError."""
    try:
        frames, consumed = wire.split_frames(data)
    except ProtocolError as err:
        assert err.args[0] in wire.FATAL
        frames, consumed = [], 0
    assert 0 <= consumed <= len(data)
    places = [(offset, length) for *_, offset, length in frames] + [(0, len(data))]
    for offset, length in places:
        for decoder in DECODERS:
            try:
                decoder(data, offset, length)
            except ProtocolError as err:
                status, message = err.args
                assert isinstance(status, int) and isinstance(message, str)


def test_every_prefix_and_single_byte_corruption_is_safe() -> None:
    for encoded in VALID:
        for n in range(len(encoded)):
            assert wire.split_frames(encoded[:n]) == ([], 0)
        for i in range(len(encoded)):
            for v in {0, 0xFF, encoded[i] ^ 1, encoded[i] ^ 0x80}:
                corrupt = bytearray(encoded)
                corrupt[i] = v
                feed(bytes(corrupt))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_random_bytes_never_crash(data: bytes) -> None:
    feed(data)
    feed(frame(0x10, 1, data))  # a valid header before random payloads


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    if draw(st.booleans()):
        data += draw(st.sampled_from(VALID))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        kind = draw(st.integers(0, 4))
        if kind == 0 and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == 1:
            data.insert(at, draw(st.integers(0, 255)))
        elif kind == 2 and data:
            del data[at]
        elif kind == 3:
            del data[at:]
        else:  # an interesting count over 2 or 4 bytes
            value = draw(st.sampled_from([0, 1, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
            width = draw(st.sampled_from([2, 4]))
            if at + width <= len(data):
                data[at : at + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
    return bytes(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_frames())
def test_mutated_frames_never_crash(data: bytes) -> None:
    feed(data)

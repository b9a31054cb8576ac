// Binding of the wire codec (rtml._core.wire): the encoders and decoders the
// Python clients and the server's Python-side handlers use. Encoders take
// Python values, check them (InputError naming the offending argument), and
// return one whole frame as bytes; decoders read a payload in place out of any
// bytes-like buffer and return fresh Python / numpy values, raising
// ProtocolError(status, message) for anything malformed. The codec itself is
// core/src/wire/codec.cc; nothing here parses bytes by hand.
#include <pybind11/eval.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "arrays.h"
#include "bindings.h"
#include "keys.h"
#include "rtml/error.h"
#include "rtml/wire.h"

namespace py = pybind11;
namespace w = rtml::wire;

namespace rtml_bindings {
namespace {

using rtml::InputError;
using rtml::Key;


// Frames and copies at least this large run without the GIL.
constexpr size_t kReleaseBytes = 1 << 16;
constexpr size_t kStr16Max = 0xFFFF;

PyObject* g_protocol_error = nullptr;  // rtml._core.wire.ProtocolError, alive for the process

std::string TypeName(const py::handle& o) { return Py_TYPE(o.ptr())->tp_name; }

[[noreturn]] void RaiseProtocol(w::Code code, const std::string& message) {
  const char* name = w::CodeName(static_cast<uint16_t>(code));
  const std::string text = std::string(name != nullptr ? name : "UNKNOWN") + ": " + message;
  PyErr_SetObject(g_protocol_error, py::make_tuple(static_cast<int>(code), text).ptr());
  throw py::error_already_set();
}

// A read-only view of a bytes-like object (bytes, bytearray, memoryview,
// numpy): no copy, valid while this lives.
class BytesView {
 public:
  BytesView(const py::handle& obj, const char* what) {
    if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_SIMPLE) != 0) {
      PyErr_Clear();
      throw InputError(std::string(what) + ": expected a bytes-like object (bytes, bytearray, memoryview), got " +
                       TypeName(obj));
    }
  }
  ~BytesView() { PyBuffer_Release(&view_); }
  BytesView(const BytesView&) = delete;
  BytesView& operator=(const BytesView&) = delete;
  const uint8_t* data() const { return static_cast<const uint8_t*>(view_.buf); }
  size_t size() const { return static_cast<size_t>(view_.len); }

 private:
  Py_buffer view_{};
};

// UTF-8 bytes of a str argument, viewed inside the str object (which the
// caller's arguments keep alive); InputError above max bytes.
std::string_view Text(const py::handle& s, const std::string& what, size_t max = kStr16Max) {
  if (!PyUnicode_Check(s.ptr())) throw InputError(what + ": expected str, got " + TypeName(s));
  Py_ssize_t len = 0;
  const char* utf8 = PyUnicode_AsUTF8AndSize(s.ptr(), &len);
  if (utf8 == nullptr) {
    PyErr_Clear();
    throw InputError(what + ": not encodable as UTF-8");
  }
  if (static_cast<size_t>(len) > max) {
    throw InputError(what + ": " + std::to_string(len) + " bytes of UTF-8, at most " + std::to_string(max) +
                     " fit in a frame");
  }
  return std::string_view(utf8, static_cast<size_t>(len));
}

// Encodes into a stack buffer first and into exactly-sized bytes when the
// frame is larger (the encoders report the size they need).
template <typename Fn>
py::bytes EncodeFrame(const std::string& what, Fn&& encode, bool may_release = true) {
  uint8_t stack[2048];
  const size_t n = encode(stack, sizeof(stack));
  if (n == 0) throw InputError(what + ": the message does not fit in one frame (payload over 4 GiB)");
  if (n <= sizeof(stack)) return py::bytes(reinterpret_cast<const char*>(stack), n);
  PyObject* raw = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(n));
  if (raw == nullptr) throw py::error_already_set();
  py::bytes out = py::reinterpret_steal<py::bytes>(raw);
  uint8_t* dst = reinterpret_cast<uint8_t*>(PyBytes_AS_STRING(raw));
  std::optional<py::gil_scoped_release> release;
  if (may_release && n >= kReleaseBytes) release.emplace();
  encode(dst, n);
  return out;
}

// ---- Keys ----

// Keys of one kind out of a list or an array (ColumnKeys checks the kind);
// ToKeys' errors gain the argument's name.
KeyBatch ConvertKeys(const py::handle& keys, bool str, const std::string& what) {
  try {
    return ToKeys(keys, str);
  } catch (const InputError& e) {
    throw InputError(what + ": " + e.what());
  }
}

KeyBatch ColumnKeysOfAnyLength(const py::handle& keys, const std::string& what) {
  if (PyUnicode_Check(keys.ptr()) || PyBytes_Check(keys.ptr())) {
    throw InputError(what + ": expected a sequence of keys, got a single " + TypeName(keys));
  }
  if (py::isinstance<py::array>(keys)) {
    const auto a = py::reinterpret_borrow<py::array>(keys);
    if (a.ndim() != 1) {
      throw InputError(what + ": expected a 1-D array of keys, got " + std::to_string(a.ndim()) + "-D");
    }
    const char kind = a.dtype().kind();
    if (kind == 'O') return ColumnKeysOfAnyLength(a.attr("tolist")(), what);
    if (a.size() == 0) return KeyBatch();
    if (kind != 'U' && kind != 'i' && kind != 'u') {
      throw InputError(what + ": expected int64 or str keys, got a numpy array of dtype " +
                       py::str(a.dtype()).cast<std::string>());
    }
    return ConvertKeys(a, kind == 'U', what);
  }
  const auto seq = py::reinterpret_steal<py::object>(PySequence_Fast(keys.ptr(), "keys must be iterable"));
  if (!seq) {
    PyErr_Clear();
    throw InputError(what + ": expected a sequence of keys, got " + TypeName(keys));
  }
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq.ptr());
  PyObject** items = PySequence_Fast_ITEMS(seq.ptr());
  const bool str = n > 0 && PyUnicode_Check(items[0]);
  for (Py_ssize_t i = 1; i < n; ++i) {
    if ((PyUnicode_Check(items[i]) != 0) != str) {
      throw InputError(what + ": key " + std::to_string(i) + " (" + py::repr(items[i]).cast<std::string>() + ") is " +
                       (str ? "not a str but key 0 is" : "a str but key 0 is not") + ": a key column holds one kind");
    }
  }
  return ConvertKeys(seq, str, what);
}

// One wire key column: a list/tuple/iterable of str or of int, or a 1-D numpy
// int or str array; one kind for the whole column (the first key's).
KeyBatch ColumnKeys(const py::handle& keys, const std::string& what) {
  KeyBatch b = ColumnKeysOfAnyLength(keys, what);
  for (size_t i = 0; i < b.size(); ++i) {
    if (b[i].is_string && b[i].s.size() > kStr16Max) {
      throw InputError(what + ": key " + std::to_string(i) + " is " + std::to_string(b[i].s.size()) +
                       " bytes, at most 65535 fit in a frame");
    }
  }
  return b;
}

// SCORE keys: one per scorer key, each of its own kind (int or str).
std::vector<Key> ScoreKeys(const py::handle& keys, const py::object& seq, const std::string& what) {
  if (!seq) {
    PyErr_Clear();
    throw InputError(what + ": expected a sequence of keys, got " + TypeName(keys));
  }
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq.ptr());
  PyObject** items = PySequence_Fast_ITEMS(seq.ptr());
  std::vector<Key> out;
  out.reserve(static_cast<size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    const std::string name = what + " " + std::to_string(i);
    PyObject* o = items[i];
    if (PyUnicode_Check(o)) {
      out.push_back(Key::Str(Text(o, name)));
      continue;
    }
    if (PyBool_Check(o) || PyFloat_Check(o) || !PyIndex_Check(o)) {
      throw InputError(name + ": expected int or str, got " + py::repr(o).cast<std::string>());
    }
    int overflow = 0;
    const auto index = py::reinterpret_steal<py::object>(PyNumber_Index(o));
    const long long v = index ? PyLong_AsLongLongAndOverflow(index.ptr(), &overflow) : -1;
    if (!index || overflow != 0 || (v == -1 && PyErr_Occurred())) {
      PyErr_Clear();
      throw InputError(name + ": " + py::repr(o).cast<std::string>() + " is outside int64");
    }
    out.push_back(Key::Int(v));
  }
  return out;
}

// ---- Arrays ----

F64 Floats(const py::handle& obj, int ndim, const std::string& what) {
  if (py::isinstance<py::array>(obj)) {
    const char kind = py::reinterpret_borrow<py::array>(obj).dtype().kind();
    if (kind == 'U' || kind == 'S' || kind == 'M' || kind == 'm' || kind == 'V') {
      throw InputError(what + ": expected numbers, got a numpy array of dtype " +
                       py::str(obj.attr("dtype")).cast<std::string>());
    }
  }
  F64 a = F64::ensure(obj);
  if (!a) throw InputError(what + ": expected numbers convertible to float64, got " + TypeName(obj));
  if (a.ndim() != ndim) {
    throw InputError(what + ": expected a " + std::to_string(ndim) + "-D array, got " + std::to_string(a.ndim()) +
                     "-D");
  }
  return a;
}

I64 Times(const py::handle& obj, size_t n, const std::string& what) {
  const py::array raw = py::array::ensure(obj);
  if (!raw) throw InputError(what + ": expected int64 nanoseconds, got " + TypeName(obj));
  const char kind = raw.dtype().kind();
  if (kind != 'i' && kind != 'u' && raw.size() != 0) {
    throw InputError(what + ": expected int64 nanoseconds, got dtype " + py::str(raw.dtype()).cast<std::string>());
  }
  I64 a = I64::ensure(raw);
  if (!a || a.ndim() != 1 || static_cast<size_t>(a.size()) != n) {
    throw InputError(what + ": expected a 1-D array of " + std::to_string(n) + " times (one per key), got shape " +
                     py::str(raw.attr("shape")).cast<std::string>());
  }
  return a;
}

uint32_t Count(size_t n, const std::string& what) {
  if (n > UINT32_MAX) throw InputError(what + ": " + std::to_string(n) + " is more than a frame can count");
  return static_cast<uint32_t>(n);
}

// ---- Decoding ----

// The payload [offset, offset + length) of buffer (length None: to its end)
// as a frame of our own minor version (so trailing bytes are malformed) with
// status OK.
struct Payload {
  Payload(const py::handle& buffer, size_t offset, std::optional<size_t> len, w::Opcode op, bool response)
      : view(buffer, "buffer") {
    const size_t length = len.value_or(offset <= view.size() ? view.size() - offset : 0);
    if (offset > view.size() || length > view.size() - offset) {
      throw InputError("payload_offset " + std::to_string(offset) + " + payload_len " + std::to_string(length) +
                       " is outside the buffer of " + std::to_string(view.size()) + " bytes");
    }
    if (length > UINT32_MAX) throw InputError("payload_len " + std::to_string(length) + " is above 4 GiB - 1");
    frame.header.opcode = static_cast<uint16_t>(op);
    frame.header.flags = response ? w::kFlagResponse : 0;
    frame.header.payload_len = static_cast<uint32_t>(length);
    frame.payload = view.data() + offset;
    frame.size = w::kHeaderSize + length;
  }
  // Raises ProtocolError for a failed decode.
  void Check(w::Code c) const {
    if (c == w::Code::kOk) return;
    const char* op = w::OpcodeName(frame.header.opcode);
    std::string why;
    if (c == w::Code::kMalformed) {
      why = ": truncated, a count beyond the bytes present, trailing bytes, or a reserved field not 0";
    }
    RaiseProtocol(c, std::string("cannot decode the ") + (op != nullptr ? op : "error") +
                         ((frame.header.flags & w::kFlagResponse) != 0 ? " response" : " request") + " payload of " +
                         std::to_string(frame.header.payload_len) + " bytes" + why);
  }
  py::str Str(std::string_view s, const char* field, const char* errors = "strict") const {
    PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), errors);
    if (o == nullptr) {
      PyErr_Clear();
      const char* op = w::OpcodeName(frame.header.opcode);
      RaiseProtocol(w::Code::kMalformed, std::string(op != nullptr ? op : "error") + " " + field + " is not UTF-8");
    }
    return py::reinterpret_steal<py::str>(o);
  }

  BytesView view;
  w::Frame frame;
};

// Copies n little-endian items of T out of wire bytes into a fresh array of shape.
template <typename T>
py::array_t<T> CopyOut(const uint8_t* raw, std::vector<py::ssize_t> shape) {
  py::array_t<T> a(shape);
  const size_t bytes = static_cast<size_t>(a.size()) * sizeof(T);
  std::optional<py::gil_scoped_release> release;
  if (bytes >= kReleaseBytes) release.emplace();
  if (bytes != 0) std::memcpy(a.mutable_data(), raw, bytes);
  return a;
}

py::ssize_t Dim(size_t n) { return static_cast<py::ssize_t>(n); }

// A decoder taking (buffer, payload_offset=0, payload_len=None).
template <typename Fn>
auto Decoder(w::Opcode op, bool response, Fn fn) {
  return [op, response, fn](const py::object& buffer, size_t offset, std::optional<size_t> length) {
    const Payload p(buffer, offset, length, op, response);
    return fn(p);
  };
}

// A decoder of a message that is one string (STATS request, MODEL_LOAD and
// MODEL_SWAP responses).
using TextDecodeFn = w::Code (*)(const w::Frame&, const w::Limits&, std::string_view*) noexcept;

auto TextDecoder(w::Opcode op, bool response, TextDecodeFn decode, const char* field) {
  return Decoder(op, response, [decode, field](const Payload& p) {
    std::string_view text;
    p.Check(decode(p.frame, w::Limits{}, &text));
    return p.Str(text, field);
  });
}

// ---- Encoders ----

py::bytes EncodeScore(uint64_t id, const py::object& scorer, const py::object& keys, const py::object& fields,
                      int64_t now_ns) {
  w::ScoreRequest m;
  m.scorer = Text(scorer, "encode_score scorer");
  m.now_ns = now_ns;
  if (PyUnicode_Check(keys.ptr())) throw InputError("encode_score keys: expected a sequence of keys, got a str");
  const auto seq = py::reinterpret_steal<py::object>(PySequence_Fast(keys.ptr(), "keys must be iterable"));
  const std::vector<Key> k = ScoreKeys(keys, seq, "encode_score key");
  if (k.size() > UINT16_MAX) {
    throw InputError("encode_score keys: " + std::to_string(k.size()) + " keys, at most 65535");
  }
  const F64 f = Floats(fields, 1, "encode_score fields");
  m.keys = k.data();
  m.n_keys = k.size();
  m.fields = f.data();
  m.n_fields = Count(static_cast<size_t>(f.size()), "encode_score fields");
  // Keys view str objects of the list: keep the GIL.
  return EncodeFrame("encode_score", [&](uint8_t* o, size_t c) { return w::EncodeScoreRequest(id, m, o, c); }, false);
}

py::bytes EncodeScoreBatch(uint64_t id, const py::object& scorer, const py::object& key_columns,
                           const py::object& fields, int64_t now_ns) {
  const std::string what = "encode_score_batch";
  w::ScoreBatchRequest m;
  m.scorer = Text(scorer, what + " scorer");
  m.now_ns = now_ns;
  if (PyUnicode_Check(key_columns.ptr())) throw InputError(what + " key_columns: expected a list of key columns");
  const auto cols = py::reinterpret_steal<py::object>(PySequence_Fast(key_columns.ptr(), "key_columns"));
  if (!cols) {
    PyErr_Clear();
    throw InputError(what + " key_columns: expected a list of key columns, got " + TypeName(key_columns));
  }
  const size_t n_keys = static_cast<size_t>(PySequence_Fast_GET_SIZE(cols.ptr()));
  if (n_keys > UINT16_MAX) throw InputError(what + ": " + std::to_string(n_keys) + " key columns, at most 65535");
  const F64 f = Floats(fields, 2, what + " fields");
  const size_t n_rows = static_cast<size_t>(f.shape(0));
  std::vector<KeyBatch> columns;
  columns.reserve(n_keys);
  for (size_t k = 0; k < n_keys; ++k) {
    const std::string col = what + " key column " + std::to_string(k);
    columns.push_back(ColumnKeys(PySequence_Fast_GET_ITEM(cols.ptr(), k), col));
    if (columns.back().size() != n_rows) {
      throw InputError(col + ": " + std::to_string(columns.back().size()) + " keys for " + std::to_string(n_rows) +
                       " rows of fields");
    }
  }
  std::vector<Key> keys(n_rows * n_keys);  // row-major, as the codec takes them
  for (size_t k = 0; k < n_keys; ++k) {
    for (size_t r = 0; r < n_rows; ++r) keys[r * n_keys + k] = columns[k][r];
  }
  m.n_rows = Count(n_rows, what + " rows");
  m.n_keys = static_cast<uint16_t>(n_keys);
  m.n_fields = Count(static_cast<size_t>(f.shape(1)), what + " fields");
  m.keys = keys.data();
  m.fields = f.data();
  return EncodeFrame(what, [&](uint8_t* o, size_t c) { return w::EncodeScoreBatchRequest(id, m, o, c); });
}

py::bytes EncodePredict(uint64_t id, const py::object& model, const py::object& X) {
  w::PredictRequest m;
  m.model = Text(model, "encode_predict model");
  py::array a;
  const bool f32 = py::isinstance<py::array>(X) &&
                   py::reinterpret_borrow<py::array>(X).dtype().is(py::dtype::of<float>());
  if (f32) {
    a = F32C::ensure(X);
  } else {
    a = Floats(X, 2, "encode_predict X");
  }
  if (!a) throw InputError("encode_predict X: not readable as a float32 array");
  if (a.ndim() != 2) throw InputError("encode_predict X: expected a 2-D array, got " + std::to_string(a.ndim()) + "-D");
  m.dtype = f32 ? rtml::DType::kFloat32 : rtml::DType::kFloat64;
  m.n_rows = Count(static_cast<size_t>(a.shape(0)), "encode_predict rows");
  m.n_cols = Count(static_cast<size_t>(a.shape(1)), "encode_predict columns");
  if (m.n_cols == 0 && m.n_rows != 0) throw InputError("encode_predict X: rows without columns");
  m.data = a.data();
  return EncodeFrame("encode_predict", [&](uint8_t* o, size_t c) { return w::EncodePredictRequest(id, m, o, c); });
}

py::bytes EncodeGetFeatures(uint64_t id, const py::object& table, const py::object& keys, int64_t now_ns) {
  w::GetFeaturesRequest m;
  m.table = Text(table, "encode_get_features table");
  const KeyBatch b = ColumnKeys(keys, "encode_get_features keys");
  m.now_ns = now_ns;
  m.n_keys = Count(b.size(), "encode_get_features keys");
  m.keys = b.data();
  return EncodeFrame("encode_get_features",
                     [&](uint8_t* o, size_t c) { return w::EncodeGetFeaturesRequest(id, m, o, c); });
}

py::bytes EncodePutFeatures(uint64_t id, const py::object& table, const py::object& keys, const py::object& values,
                            const py::object& event_ns) {
  const std::string what = "encode_put_features";
  w::PutFeaturesRequest m;
  m.table = Text(table, what + " table");
  const KeyBatch b = ColumnKeys(keys, what + " keys");
  const F64 v = Floats(values, 2, what + " values");
  if (static_cast<size_t>(v.shape(0)) != b.size()) {
    throw InputError(what + " values: " + std::to_string(v.shape(0)) + " rows for " + std::to_string(b.size()) +
                     " keys");
  }
  const I64 t = Times(event_ns, b.size(), what + " event_ns");
  m.n_rows = Count(b.size(), what + " keys");
  m.n_fields = Count(static_cast<size_t>(v.shape(1)), what + " fields");
  m.keys = b.data();
  m.event_ns = t.data();
  m.values = v.data();
  return EncodeFrame(what, [&](uint8_t* o, size_t c) { return w::EncodePutFeaturesRequest(id, m, o, c); });
}

py::bytes EncodeIngest(uint64_t id, const py::object& window_set, const py::object& keys, const py::object& values,
                       const py::object& event_ns) {
  const std::string what = "encode_ingest";
  w::IngestRequest m;
  m.window_set = Text(window_set, what + " window_set");
  const KeyBatch b = ColumnKeys(keys, what + " keys");
  const F64 v = Floats(values, 1, what + " values");
  if (static_cast<size_t>(v.size()) != b.size()) {
    throw InputError(what + " values: " + std::to_string(v.size()) + " values for " + std::to_string(b.size()) +
                     " keys; expected one per key");
  }
  const I64 t = Times(event_ns, b.size(), what + " event_ns");
  m.n_events = Count(b.size(), what + " keys");
  m.keys = b.data();
  m.event_ns = t.data();
  m.values = v.data();
  return EncodeFrame(what, [&](uint8_t* o, size_t c) { return w::EncodeIngestRequest(id, m, o, c); });
}

py::bytes EncodeModelLoad(uint64_t id, const py::object& name, const py::object& path, const py::object& data) {
  const std::string what = "encode_model_load";
  if (path.is_none() == data.is_none()) throw InputError(what + ": pass exactly one of path= and data=");
  w::ModelLoadRequest m;
  m.name = Text(name, what + " name");
  std::optional<BytesView> bytes;
  py::object fs_path;
  if (!path.is_none()) {
    fs_path = py::module_::import("os").attr("fspath")(path);
    m.source = w::ModelSource::kPath;
    m.path = Text(fs_path, what + " path", w::kMaxPathBytes);
  } else {
    bytes.emplace(data, (what + " data").c_str());
    if (bytes->size() > UINT32_MAX) throw InputError(what + " data: above 4 GiB - 1 bytes");
    m.source = w::ModelSource::kInline;
    m.data = bytes->data();
    m.size = static_cast<uint32_t>(bytes->size());
  }
  return EncodeFrame(what, [&](uint8_t* o, size_t c) { return w::EncodeModelLoadRequest(id, m, o, c); });
}

py::bytes EncodeModelSwap(uint64_t id, const py::object& scorer, const py::object& model, int role,
                          const py::object& arm) {
  const std::string what = "encode_model_swap";
  w::ModelSwapRequest m;
  m.scorer = Text(scorer, what + " scorer");
  m.model = Text(model, what + " model");
  m.arm = Text(arm, what + " arm");
  if (role != 0 && role != 1) {
    throw InputError(what + " role: expected 0 (primary) or 1 (shadow), got " + std::to_string(role));
  }
  m.role = static_cast<w::ModelRole>(role);
  return EncodeFrame(what, [&](uint8_t* o, size_t c) { return w::EncodeModelSwapRequest(id, m, o, c); });
}

py::bytes EncodeError(uint16_t opcode, uint64_t id, int status, const py::object& message, bool closing) {
  if (status <= 0 || status > UINT16_MAX) {
    throw InputError("encode_error status: expected a nonzero u16 status code, got " + std::to_string(status));
  }
  std::string_view text = Text(message, "encode_error message", SIZE_MAX);
  if (text.size() > w::kMaxMessageBytes) {  // cut on a character boundary
    size_t n = w::kMaxMessageBytes;
    while (n > 0 && (static_cast<uint8_t>(text[n]) & 0xC0) == 0x80) --n;
    text = text.substr(0, n);
  }
  return EncodeFrame("encode_error", [&](uint8_t* o, size_t c) {
    return w::EncodeError(opcode, id, static_cast<w::Code>(status), text, closing, o, c);
  });
}

// An encoder of a message that is one string (STATS request, MODEL_LOAD and
// MODEL_SWAP responses); what names the function and its argument.
using TextEncoder = size_t (*)(uint64_t, std::string_view, uint8_t*, size_t) noexcept;

auto TextFrame(const char* what, TextEncoder encode) {
  return [what, encode](uint64_t rid, const py::object& s) {
    const std::string_view text = Text(s, what);
    return EncodeFrame(what, [&](uint8_t* o, size_t c) { return encode(rid, text, o, c); });
  };
}

// ---- split_frames ----

py::tuple SplitFrames(const py::object& buffer, uint32_t max_payload) {
  const BytesView v(buffer, "split_frames buffer");
  w::Limits limits;
  limits.max_payload = max_payload;
  w::FrameSplitter s(v.data(), v.size(), limits);
  py::list frames;
  for (;;) {
    w::Frame f;
    w::Code err = w::Code::kOk;
    const size_t at = s.consumed();
    const w::SplitResult r = s.Next(&f, &err);
    if (r == w::SplitResult::kNeedMore) break;
    if (r == w::SplitResult::kFatal) {
      const std::string where = "the frame at offset " + std::to_string(at);
      uint32_t len = 0;
      if (v.size() - at >= w::kHeaderSize) std::memcpy(&len, v.data() + at + 20, 4);
      switch (err) {
        case w::Code::kBadMagic:
          RaiseProtocol(err, "the bytes at offset " + std::to_string(at) + " do not start an rtml frame");
        case w::Code::kUnsupportedVersion:
          RaiseProtocol(err, where + " speaks protocol major " + std::to_string(v.data()[at + 4]) + ", this peer " +
                                 std::to_string(w::kVersionMajor));
        case w::Code::kFrameTooLarge:
          RaiseProtocol(err, where + " declares a payload of " + std::to_string(len) + " bytes, above max_payload=" +
                                 std::to_string(max_payload));
        default:
          RaiseProtocol(err, where + " is unreadable");
      }
    }
    const w::Header& h = f.header;
    frames.append(py::make_tuple(h.opcode, h.flags, h.status, h.request_id,
                                 static_cast<size_t>(f.payload - v.data()), h.payload_len));
  }
  return py::make_tuple(frames, s.consumed());
}

// ---- Registration ----

const char* const kModuleDoc = R"(rtml wire protocol codec (docs/protocol.md), over the C++ codec.

Encoders return one whole frame (header + payload) as bytes. Keys are a list of
str, a list of int, or a 1-D numpy int64 or str array; a key column holds one
kind. Bad arguments raise rtml.InputError naming the argument.

split_frames(buffer) reads any bytes-like object in place and returns the
complete frames as (opcode, flags, status, request_id, payload_offset,
payload_len) tuples, with the bytes they span.

Every decoder takes (buffer, payload_offset=0, payload_len=None): the buffer a
frame came from and its payload's place in it, as split_frames gives them
(payload_len None: to the buffer's end, so a lone payload is decoder(payload)).
Response decoders read a response whose status is OK (decode_error reads the
others). Decoders are strict (trailing bytes are malformed) and raise
ProtocolError, whose args are (status, message), for any malformed payload.
numpy results are fresh arrays.)";

void BindConstants(py::module_& m) {
  py::dict opcodes, status;
#define RTML_X(name, value, wire_name) opcodes[#wire_name] = value;
  RTML_OPCODES(RTML_X)
#undef RTML_X
#define RTML_X(name, value, wire_name) status[#wire_name] = value;
  RTML_STATUS_CODES(RTML_X)
#undef RTML_X
  py::list fatal;
#define RTML_X(name, value, wire_name) \
  if (w::IsFatal(w::Code::name)) fatal.append(value);
  RTML_STATUS_CODES(RTML_X)
#undef RTML_X
  m.attr("OPCODES") = opcodes;
  m.attr("STATUS") = status;
  m.attr("FATAL") = py::reinterpret_steal<py::object>(PyFrozenSet_New(fatal.ptr()));
  m.attr("HEADER_SIZE") = w::kHeaderSize;
  m.attr("MAGIC") = w::kMagic;
  m.attr("VERSION") = py::make_tuple(w::kVersionMajor, w::kVersionMinor);
  m.attr("FLAG_RESPONSE") = w::kFlagResponse;
  m.attr("FLAG_CLOSING") = w::kFlagClosing;
  m.attr("DEFAULT_MAX_PAYLOAD") = w::Limits{}.max_payload;
}

// ProtocolError(status, message): str() is the message, .status the code.
void BindProtocolError(py::module_& core, py::module_& m) {
  py::dict ns;
  ns["__builtins__"] = py::module_::import("builtins");
  py::exec(R"(
def __str__(self):
    return str(self.args[1]) if len(self.args) == 2 else Exception.__str__(self)
status = property(lambda self: self.args[0] if self.args else None, doc="The status code (int).")
message = property(lambda self: self.args[1] if len(self.args) > 1 else "", doc="What failed.")
)",
           ns);
  py::dict attrs;
  for (const char* name : {"__str__", "status", "message"}) attrs[name] = ns[name];
  attrs["__doc__"] = "A malformed frame or payload: args are (status, message), status a STATUS value.";
  g_protocol_error = PyErr_NewException("rtml._core.wire.ProtocolError", core.attr("RtmlError").ptr(), attrs.ptr());
  if (g_protocol_error == nullptr) throw py::error_already_set();
  m.attr("ProtocolError") = py::reinterpret_borrow<py::object>(g_protocol_error);
}

void BindEncoders(py::module_& m) {
  const auto id = py::arg("request_id");
  m.def(
      "encode_hello",
      [](uint64_t rid, const py::object& token) {
        w::HelloRequest h;
        h.token = Text(token, "encode_hello token");
        return EncodeFrame("encode_hello", [&](uint8_t* o, size_t c) { return w::EncodeHelloRequest(rid, h, o, c); });
      },
      id, py::arg("token") = "", "HELLO request: the protocol version and an auth token (empty: none).");
  m.def(
      "encode_ping",
      [](uint64_t rid, const py::object& payload) {
        const BytesView p(payload, "encode_ping payload");
        const std::string_view echo(reinterpret_cast<const char*>(p.data()), p.size());
        return EncodeFrame("encode_ping", [&](uint8_t* o, size_t c) { return w::EncodePing(rid, 0, echo, o, c); });
      },
      id, py::arg("payload") = py::bytes(), "PING request: bytes the response echoes.");
  m.def("encode_score", &EncodeScore, id, py::arg("scorer"), py::arg("keys"), py::arg("fields"), py::kw_only(),
        py::arg("now_ns") = 0,
        "SCORE request: keys in the scorer's key order (each an int or a str), fields a 1-D float64 sequence; "
        "now_ns the time features are read at (0: the server's clock).");
  m.def("encode_score_batch", &EncodeScoreBatch, id, py::arg("scorer"), py::arg("key_columns"), py::arg("fields"),
        py::kw_only(), py::arg("now_ns") = 0,
        "SCORE_BATCH request: key_columns a list with one key column per scorer key (each n_rows long), "
        "fields a 2-D [n_rows, n_fields] float64 array; now_ns as in encode_score.");
  m.def("encode_predict", &EncodePredict, id, py::arg("model"), py::arg("X"),
        "PREDICT request: X a 2-D array, sent as float32 if it is float32 and as float64 otherwise.");
  m.def("encode_get_features", &EncodeGetFeatures, id, py::arg("table"), py::arg("keys"), py::arg("now_ns") = 0,
        "GET_FEATURES request: one key column; now_ns 0 means the server's clock.");
  m.def("encode_put_features", &EncodePutFeatures, id, py::arg("table"), py::arg("keys"), py::arg("values"),
        py::arg("event_ns"), "PUT_FEATURES request: values 2-D [n, n_fields], event_ns 1-D int64 [n].");
  m.def("encode_ingest", &EncodeIngest, id, py::arg("window_set"), py::arg("keys"), py::arg("values"),
        py::arg("event_ns"), "INGEST request: one float64 value and one int64 event time per key.");
  m.def("encode_stats", TextFrame("encode_stats name", &w::EncodeStatsRequest), id, py::arg("name") = "",
        "STATS request: a scorer, table or window set name; empty for everything.");
  m.def("encode_model_load", &EncodeModelLoad, id, py::arg("name"), py::kw_only(), py::arg("path") = py::none(),
        py::arg("data") = py::none(),
        "MODEL_LOAD request: exactly one of path (a file on the server) and data (a compiled model's bytes).");
  m.def("encode_model_swap", &EncodeModelSwap, id, py::arg("scorer"), py::arg("model"), py::arg("role") = 0,
        py::arg("arm") = "", "MODEL_SWAP request: role 0 primary, 1 shadow; arm empty for the primary arm.");
}

void BindResponseEncoders(py::module_& m) {
  const auto id = py::arg("request_id");
  m.def(
      "encode_stats_response",
      [](uint64_t rid, const py::object& json) {
        std::optional<BytesView> bytes;
        std::string_view text;
        if (PyUnicode_Check(json.ptr())) {
          text = Text(json, "encode_stats_response json", SIZE_MAX);
        } else {
          bytes.emplace(json, "encode_stats_response json_bytes");
          text = std::string_view(reinterpret_cast<const char*>(bytes->data()), bytes->size());
        }
        return EncodeFrame("encode_stats_response",
                           [&](uint8_t* o, size_t c) { return w::EncodeStatsResponse(rid, text, o, c); });
      },
      id, py::arg("json_bytes"), "STATS response: a UTF-8 JSON document (bytes or str).");
  m.def("encode_model_load_response", TextFrame("encode_model_load_response version", &w::EncodeModelLoadResponse),
        id, py::arg("version"), "MODEL_LOAD response: the loaded model's version.");
  m.def("encode_model_swap_response", TextFrame("encode_model_swap_response previous", &w::EncodeModelSwapResponse),
        id, py::arg("previous"), "MODEL_SWAP response: the version the swap replaced.");
  m.def("encode_error", &EncodeError, py::arg("opcode"), id, py::arg("status"), py::arg("message"),
        py::arg("closing") = false,
        "Error response to opcode (0 for connection-level errors); the message is cut to 4096 bytes.");
}

#define RTML_PAYLOAD_ARGS py::arg("buffer"), py::arg("payload_offset") = 0, py::arg("payload_len") = py::none()

void BindResponseDecoders(py::module_& m) {
  using w::Opcode;
  m.def("decode_hello_response", Decoder(Opcode::kHello, true, [](const Payload& p) {
          w::HelloResponse r;
          p.Check(w::DecodeHelloResponse(p.frame, w::Limits{}, &r));
          py::dict d;
          d["major"] = r.major;
          d["minor"] = r.minor;
          d["max_payload"] = r.max_payload;
          d["max_in_flight"] = r.max_in_flight;
          d["server"] = p.Str(r.server, "server");
          return d;
        }),
        RTML_PAYLOAD_ARGS, "HELLO response -> dict(major, minor, max_payload, max_in_flight, server).");
  m.def("decode_ping", Decoder(Opcode::kPing, true, [](const Payload& p) {
          return py::bytes(reinterpret_cast<const char*>(p.frame.payload), p.frame.header.payload_len);
        }),
        RTML_PAYLOAD_ARGS, "PING payload (request or response) -> bytes.");
  m.def("decode_score", Decoder(Opcode::kScore, true, [](const Payload& p) {
          w::ScoreResponse r;
          p.Check(w::DecodeScoreResponse(p.frame, &r));
          return CopyOut<double>(r.raw, {Dim(r.n_outputs)});
        }),
        RTML_PAYLOAD_ARGS, "SCORE response -> 1-D float64 outputs.");
  m.def("decode_score_batch", Decoder(Opcode::kScoreBatch, true, [](const Payload& p) {
          w::ScoreBatchResponse r;
          p.Check(w::DecodeScoreBatchResponse(p.frame, &r));
          return py::make_tuple(CopyOut<double>(r.raw, {Dim(r.n_rows), Dim(r.n_outputs)}),
                                CopyOut<uint8_t>(r.status, {Dim(r.n_rows)}));
        }),
        RTML_PAYLOAD_ARGS,
        "SCORE_BATCH response -> (float64 [n_rows, n_outputs], uint8 row status [n_rows]: 0 ok, else a STATUS "
        "value; failed rows are NaN).");
  m.def("decode_predict", Decoder(Opcode::kPredict, true, [](const Payload& p) {
          w::PredictResponse r;
          p.Check(w::DecodePredictResponse(p.frame, &r));
          return CopyOut<double>(r.raw, {Dim(r.n_rows), Dim(r.n_outputs)});
        }),
        RTML_PAYLOAD_ARGS, "PREDICT response -> float64 [n_rows, n_outputs].");
  m.def("decode_get_features", Decoder(Opcode::kGetFeatures, true, [](const Payload& p) {
          w::GetFeaturesResponse r;
          p.Check(w::DecodeGetFeaturesResponse(p.frame, &r));  // found bytes are 0 or 1: valid bools
          return py::make_tuple(CopyOut<double>(r.raw_values, {Dim(r.n_keys), Dim(r.n_fields)}),
                                CopyOut<bool>(r.found, {Dim(r.n_keys)}),
                                CopyOut<int64_t>(r.raw_event_ns, {Dim(r.n_keys)}));
        }),
        RTML_PAYLOAD_ARGS,
        "GET_FEATURES response -> (float64 values [n_keys, n_fields], bool found [n_keys], int64 event_ns "
        "[n_keys]).");
  m.def("decode_put_features", Decoder(Opcode::kPutFeatures, true, [](const Payload& p) {
          w::PutFeaturesResponse r;
          p.Check(w::DecodePutFeaturesResponse(p.frame, &r));
          return CopyOut<uint8_t>(r.status, {Dim(r.n_rows)});
        }),
        RTML_PAYLOAD_ARGS, "PUT_FEATURES response -> uint8 row status: 0 ok, 1 stale, else a STATUS value.");
  m.def("decode_ingest", Decoder(Opcode::kIngest, true, [](const Payload& p) {
          w::IngestResponse r;
          p.Check(w::DecodeIngestResponse(p.frame, &r));
          return py::make_tuple(r.accepted, r.dropped);
        }),
        RTML_PAYLOAD_ARGS, "INGEST response -> (accepted, dropped).");
  m.def("decode_stats", Decoder(Opcode::kStats, true, [](const Payload& p) {
          std::string_view json;
          p.Check(w::DecodeStatsResponse(p.frame, &json));
          return py::bytes(json.data(), json.size());
        }),
        RTML_PAYLOAD_ARGS, "STATS response -> the JSON document's bytes.");
  m.def("decode_model_load", TextDecoder(Opcode::kModelLoad, true, &w::DecodeModelLoadResponse, "version"),
        RTML_PAYLOAD_ARGS, "MODEL_LOAD response -> the loaded model's version.");
  m.def("decode_model_swap", TextDecoder(Opcode::kModelSwap, true, &w::DecodeModelSwapResponse, "previous version"),
        RTML_PAYLOAD_ARGS, "MODEL_SWAP response -> the version the swap replaced.");
  m.def("decode_error", Decoder(static_cast<Opcode>(w::kOpcodeNone), true, [](const Payload& p) {
          w::Frame f = p.frame;
          f.header.status = static_cast<uint16_t>(w::Code::kInternal);  // any error status: the payload is the same
          w::Code code;
          std::string_view message;
          p.Check(w::DecodeError(f, &code, &message));
          return p.Str(message, "error message", "replace");
        }),
        RTML_PAYLOAD_ARGS, "Error response (status not OK) -> its message (undecodable UTF-8 replaced).");
}

void BindRequestDecoders(py::module_& m) {
  using w::Opcode;
  m.def("decode_stats_request", TextDecoder(Opcode::kStats, false, &w::DecodeStatsRequest, "name"),
        RTML_PAYLOAD_ARGS, "STATS request -> the name asked for ('' for everything).");
  m.def("decode_model_load_request", Decoder(Opcode::kModelLoad, false, [](const Payload& p) {
          w::ModelLoadRequest r;
          p.Check(w::DecodeModelLoadRequest(p.frame, w::Limits{}, &r));
          py::object path = py::none(), data = py::none();
          if (r.source == w::ModelSource::kPath) {
            path = p.Str(r.path, "path");
          } else {
            data = py::bytes(reinterpret_cast<const char*>(r.data), r.size);
          }
          return py::make_tuple(p.Str(r.name, "name"), path, data);
        }),
        RTML_PAYLOAD_ARGS, "MODEL_LOAD request -> (name, path or None, data bytes or None).");
  m.def("decode_model_swap_request", Decoder(Opcode::kModelSwap, false, [](const Payload& p) {
          w::ModelSwapRequest r;
          p.Check(w::DecodeModelSwapRequest(p.frame, w::Limits{}, &r));
          return py::make_tuple(p.Str(r.scorer, "scorer"), p.Str(r.model, "model"), static_cast<int>(r.role),
                                p.Str(r.arm, "arm"));
        }),
        RTML_PAYLOAD_ARGS, "MODEL_SWAP request -> (scorer, model, role, arm).");
}

#undef RTML_PAYLOAD_ARGS

}  // namespace

void BindWire(py::module_& core) {
  py::module_ m = core.def_submodule("wire", kModuleDoc);
  BindConstants(m);
  BindProtocolError(core, m);
  BindEncoders(m);
  BindResponseEncoders(m);
  BindResponseDecoders(m);
  BindRequestDecoders(m);
  m.def("split_frames", &SplitFrames, py::arg("buffer"), py::arg("max_payload") = w::Limits{}.max_payload,
        "The complete frames at the front of buffer, read in place: ([(opcode, flags, status, request_id, "
        "payload_offset, payload_len), ...], bytes consumed). Raises ProtocolError on a fatal framing error.");
}

}  // namespace rtml_bindings

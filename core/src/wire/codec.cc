// rtml wire codec (rtml/wire.h): framing, header checks and message layouts.
// Every function here is noexcept and allocation-free: the server calls them
// once per frame on its hot path.
#include <limits>

#include "rtml/wire.h"

namespace rtml::wire {
namespace {

constexpr uint8_t kKeyInt = 0;
constexpr uint8_t kKeyStr = 1;

// Writes a header with payload_len 0 and patches the length once the payload
// is written; invalid_ marks a message no receiver could accept.
class FrameBuilder {
 public:
  FrameBuilder(uint8_t* out, size_t cap, uint16_t opcode, uint16_t flags, uint16_t status, uint64_t id) noexcept
      : w(out, cap) {
    Header h;
    h.opcode = opcode;
    h.flags = flags;
    h.status = status;
    h.request_id = id;
    uint8_t buf[kHeaderSize];
    WriteHeader(h, buf);
    w.Raw(buf, kHeaderSize);
  }
  void Str16(std::string_view s) noexcept {
    if (s.size() > 0xFFFF) invalid_ = true;
    w.Str16(s.substr(0, 0xFFFF));
  }
  void Array(const void* data, uint64_t n, size_t item_size) noexcept {
    if (n > std::numeric_limits<uint32_t>::max() / item_size) {
      invalid_ = true;
      return;
    }
    w.Raw(data, static_cast<size_t>(n) * item_size);
  }
  // A key column: u8 kind, then n i64 or n str16, read at keys[0],
  // keys[stride], ... An empty column is written as kind int.
  void KeyColumn(const Key* keys, size_t n, size_t stride) noexcept {
    const bool str = n != 0 && keys[0].is_string;
    w.U8(str ? kKeyStr : kKeyInt);
    for (size_t i = 0; i < n; ++i) {
      const Key& k = keys[i * stride];
      if (k.is_string != str) invalid_ = true;  // one kind per column
      if (str) {
        Str16(k.s);
      } else {
        w.I64(k.i);
      }
    }
  }
  // u32 length + bytes.
  void Blob32(const void* data, size_t n) noexcept {
    if (n > std::numeric_limits<uint32_t>::max()) {
      invalid_ = true;
      return;
    }
    w.U32(static_cast<uint32_t>(n));
    Array(data, n, 1);
  }
  // Keyed rows of PUT_FEATURES and INGEST: key column, i64 event_ns[n],
  // f64 values[n * width].
  void KeyedRows(const Key* keys, uint32_t n, uint32_t width, const void* event_ns, const void* values) noexcept {
    KeyColumn(keys, n, 1);
    Array(event_ns, n, sizeof(int64_t));
    Array(values, uint64_t{n} * width, sizeof(double));
  }
  void Invalid() noexcept { invalid_ = true; }
  size_t Finish() noexcept {
    const size_t payload = w.size() - kHeaderSize;
    if (invalid_ || payload > std::numeric_limits<uint32_t>::max()) return 0;
    if (w.fits()) {
      const uint32_t len = static_cast<uint32_t>(payload);
      std::memcpy(w.data() + 20, &len, sizeof(len));
    }
    return w.size();
  }
  Writer w;

 private:
  bool invalid_ = false;
};

// Trailing bytes are tolerated only from a newer minor version (which may
// append fields we do not know).
Code Finish(const Reader& r, const Frame& f) noexcept {
  if (!r.ok()) return Code::kMalformed;
  if (r.remaining() != 0 && f.header.minor <= kVersionMinor) return Code::kMalformed;
  return Code::kOk;
}

Reader PayloadReader(const Frame& f) noexcept { return Reader(f.payload, f.header.payload_len); }

uint16_t ResponseStatus(const Frame& f) noexcept { return f.header.status; }

// n items of item_size bytes viewed in place; the count is judged against the
// bytes left before any size is computed from it.
bool View(Reader& r, uint64_t n, size_t item_size, const uint8_t** out) noexcept {
  return r.CanHold(n, item_size) && r.Bytes(static_cast<size_t>(n) * item_size, out);
}

// Reads a key column (FrameBuilder::KeyColumn) of n keys into keys[0],
// keys[stride], ...; the caller checked that the buffer holds them. An empty
// column must be of kind int, so every accepted column has one encoding.
Code ReadKeyColumn(Reader& r, const Limits& limits, size_t n, Key* keys, size_t stride) noexcept {
  uint8_t kind;
  if (!r.U8(&kind)) return Code::kMalformed;
  if (kind == kKeyInt) {
    const uint8_t* raw;
    if (!View(r, n, sizeof(int64_t), &raw)) return Code::kMalformed;
    for (size_t i = 0; i < n; ++i) {
      int64_t v;
      std::memcpy(&v, raw + i * sizeof(int64_t), sizeof(v));
      keys[i * stride] = Key::Int(v);
    }
    return Code::kOk;
  }
  if (kind != kKeyStr) return Code::kBadKeyKind;
  if (n == 0 || !r.CanHold(n, sizeof(uint16_t))) return Code::kMalformed;
  for (size_t i = 0; i < n; ++i) {
    std::string_view s;
    const Code c = r.Str16(limits.max_key_bytes, &s);
    if (c != Code::kOk) return c;
    keys[i * stride] = Key::Str(s);
  }
  return Code::kOk;
}

// FrameBuilder::KeyedRows, read back; the arrays are views.
Code ReadKeyedRows(Reader& r, const Limits& limits, uint32_t n, uint32_t width, Key* keys, const void** event_ns,
                   const void** values) noexcept {
  const Code c = ReadKeyColumn(r, limits, n, keys, 1);
  if (c != Code::kOk) return c;
  const uint8_t* ev;
  const uint8_t* vals;
  if (!View(r, n, sizeof(int64_t), &ev) || !View(r, uint64_t{n} * width, sizeof(double), &vals)) {
    return Code::kMalformed;
  }
  *event_ns = ev;
  *values = vals;
  return Code::kOk;
}

// A response whose payload is one str16 (MODEL_LOAD, MODEL_SWAP).
size_t EncodeStr16Response(Opcode op, uint64_t id, std::string_view s, uint8_t* out, size_t cap) noexcept {
  FrameBuilder b(out, cap, static_cast<uint16_t>(op), kFlagResponse, 0, id);
  b.Str16(s);
  return b.Finish();
}

Code DecodeStr16Payload(const Frame& f, uint16_t max, std::string_view* out) noexcept {
  Reader r = PayloadReader(f);
  const Code c = r.Str16(max, out);
  return c != Code::kOk ? c : Finish(r, f);
}

// u32 length + bytes (STATS response, inline MODEL_LOAD).
bool ReadBlob32(Reader& r, const uint8_t** data, uint32_t* n) noexcept {
  return r.U32(n) && r.Bytes(*n, data);
}

}  // namespace

const char* OpcodeName(uint16_t opcode) noexcept {
  switch (opcode) {
#define RTML_X(name, value, wire_name) \
  case value:                          \
    return #wire_name;
    RTML_OPCODES(RTML_X)
#undef RTML_X
    default:
      return nullptr;
  }
}

const char* CodeName(uint16_t code) noexcept {
  switch (code) {
#define RTML_X(name, value, wire_name) \
  case value:                          \
    return #wire_name;
    RTML_STATUS_CODES(RTML_X)
#undef RTML_X
    default:
      return nullptr;
  }
}

bool IsFatal(Code code) noexcept {
  return code == Code::kBadMagic || code == Code::kUnsupportedVersion || code == Code::kFrameTooLarge ||
         code == Code::kUnauthorized;
}

Code ParseHeader(const uint8_t* p, size_t n, const Limits& limits, Header* out) noexcept {
  if (n < kHeaderSize) return Code::kMalformed;
  uint32_t magic;
  std::memcpy(&magic, p, 4);
  if (magic != kMagic) return Code::kBadMagic;
  out->major = p[4];
  out->minor = p[5];
  std::memcpy(&out->opcode, p + 6, 2);
  std::memcpy(&out->flags, p + 8, 2);
  std::memcpy(&out->status, p + 10, 2);
  std::memcpy(&out->request_id, p + 12, 8);
  std::memcpy(&out->payload_len, p + 20, 4);
  if (out->major != kVersionMajor) return Code::kUnsupportedVersion;
  if (out->payload_len > limits.max_payload) return Code::kFrameTooLarge;
  return Code::kOk;
}

void WriteHeader(const Header& h, uint8_t* out) noexcept {
  std::memcpy(out, &kMagic, 4);
  out[4] = h.major;
  out[5] = h.minor;
  std::memcpy(out + 6, &h.opcode, 2);
  std::memcpy(out + 8, &h.flags, 2);
  std::memcpy(out + 10, &h.status, 2);
  std::memcpy(out + 12, &h.request_id, 8);
  std::memcpy(out + 20, &h.payload_len, 4);
}

Code CheckRequestHeader(const Header& h) noexcept {
  if (OpcodeName(h.opcode) == nullptr) return Code::kUnknownOpcode;
  if (h.flags != 0) return Code::kBadFlags;  // no request flag is defined in 1.0
  if (h.status != 0) return Code::kMalformed;
  return Code::kOk;
}

SplitResult FrameSplitter::Next(Frame* frame, Code* error) noexcept {
  const uint8_t* p = data_ + pos_;
  const size_t n = size_ - pos_;
  if (n < kHeaderSize) {
    // Judge the bytes that are here, so garbage fails on its first wrong byte
    // while any true prefix of a frame waits for more.
    uint8_t magic[4];
    std::memcpy(magic, &kMagic, 4);
    for (size_t i = 0; i < n && i < 4; ++i) {
      if (p[i] != magic[i]) {
        *error = Code::kBadMagic;
        return SplitResult::kFatal;
      }
    }
    if (n > 4 && p[4] != kVersionMajor) {
      *error = Code::kUnsupportedVersion;
      return SplitResult::kFatal;
    }
    return SplitResult::kNeedMore;
  }
  const Code c = ParseHeader(p, n, limits_, &frame->header);
  if (c != Code::kOk) {
    *error = c;
    return SplitResult::kFatal;
  }
  const size_t total = kHeaderSize + frame->header.payload_len;
  if (n < total) return SplitResult::kNeedMore;
  frame->payload = p + kHeaderSize;
  frame->size = total;
  pos_ += total;
  return SplitResult::kFrame;
}

bool Reader::Bytes(size_t n, const uint8_t** out) noexcept {
  if (!ok_ || static_cast<size_t>(end_ - p_) < n) {
    ok_ = false;
    *out = nullptr;
    return false;
  }
  *out = p_;
  p_ += n;
  return true;
}

Code Reader::Str16(uint16_t max, std::string_view* out) noexcept {
  *out = {};
  uint16_t len;
  const uint8_t* bytes;
  if (!U16(&len) || !Bytes(len, &bytes)) return Code::kMalformed;
  if (len > max) return Code::kStringTooLong;
  *out = std::string_view(reinterpret_cast<const char*>(bytes), len);
  return Code::kOk;
}

// ---- HELLO: u8 major, u8 minor, u16 reserved, str16 token ----

size_t EncodeHelloRequest(uint64_t id, const HelloRequest& m, uint8_t* out, size_t cap) noexcept {
  FrameBuilder b(out, cap, static_cast<uint16_t>(Opcode::kHello), 0, 0, id);
  b.w.U8(m.major);
  b.w.U8(m.minor);
  b.w.U16(0);
  b.Str16(m.token);
  return b.Finish();
}

Code DecodeHelloRequest(const Frame& f, const Limits& limits, HelloRequest* out) noexcept {
  Reader r = PayloadReader(f);
  uint16_t reserved;
  r.U8(&out->major);
  r.U8(&out->minor);
  r.U16(&reserved);
  const Code c = r.Str16(limits.max_token_bytes, &out->token);
  if (c != Code::kOk) return c;
  if (reserved != 0 && f.header.minor <= kVersionMinor) return Code::kMalformed;
  return Finish(r, f);
}

// u8 major, u8 minor, u16 reserved, u32 max_payload, u32 max_in_flight, str16 server
size_t EncodeHelloResponse(uint64_t id, const HelloResponse& m, uint8_t* out, size_t cap) noexcept {
  FrameBuilder b(out, cap, static_cast<uint16_t>(Opcode::kHello), kFlagResponse, 0, id);
  b.w.U8(m.major);
  b.w.U8(m.minor);
  b.w.U16(0);
  b.w.U32(m.max_payload);
  b.w.U32(m.max_in_flight);
  b.Str16(m.server);
  return b.Finish();
}

Code DecodeHelloResponse(const Frame& f, const Limits& limits, HelloResponse* out) noexcept {
  if (ResponseStatus(f) != 0) return static_cast<Code>(ResponseStatus(f));
  Reader r = PayloadReader(f);
  uint16_t reserved;
  r.U8(&out->major);
  r.U8(&out->minor);
  r.U16(&reserved);
  r.U32(&out->max_payload);
  r.U32(&out->max_in_flight);
  const Code c = r.Str16(limits.max_name_bytes, &out->server);
  if (c != Code::kOk) return c;
  if (reserved != 0 && f.header.minor <= kVersionMinor) return Code::kMalformed;
  return Finish(r, f);
}

// ---- PING: opaque bytes, echoed ----

size_t EncodePing(uint64_t id, uint16_t flags, std::string_view echo, uint8_t* out, size_t cap) noexcept {
  FrameBuilder b(out, cap, static_cast<uint16_t>(Opcode::kPing), flags, 0, id);
  b.Array(echo.data(), echo.size(), 1);
  return b.Finish();
}

// ---- SCORE: str16 scorer, u16 n_keys, keys, u32 n_fields, f64[n_fields] ----
// key: u8 kind (0 int64, 1 string), then i64 or str16.

size_t EncodeScoreRequest(uint64_t id, const ScoreRequest& m, uint8_t* out, size_t cap) noexcept {
  FrameBuilder b(out, cap, static_cast<uint16_t>(Opcode::kScore), 0, 0, id);
  b.Str16(m.scorer);
  b.w.I64(m.now_ns);
  if (m.n_keys > 0xFFFF) return 0;
  b.w.U16(static_cast<uint16_t>(m.n_keys));
  for (size_t i = 0; i < m.n_keys; ++i) {
    if (m.keys[i].is_string) {
      b.w.U8(kKeyStr);
      b.Str16(m.keys[i].s);
    } else {
      b.w.U8(kKeyInt);
      b.w.I64(m.keys[i].i);
    }
  }
  if (m.n_fields > std::numeric_limits<uint32_t>::max()) return 0;
  b.w.U32(static_cast<uint32_t>(m.n_fields));
  b.Array(m.fields, m.n_fields, sizeof(double));
  return b.Finish();
}

Code DecodeScoreRequest(const Frame& f, const Limits& limits, Key* keys, size_t key_cap, double* fields,
                        size_t field_cap, ScoreRequest* out) noexcept {
  Reader r = PayloadReader(f);
  Code c = r.Str16(limits.max_name_bytes, &out->scorer);
  if (c != Code::kOk) return c;
  uint16_t n_keys;
  if (!r.I64(&out->now_ns) || !r.U16(&n_keys)) return Code::kMalformed;
  if (n_keys > limits.max_keys || n_keys > key_cap) return Code::kTooMany;
  for (size_t i = 0; i < n_keys; ++i) {
    uint8_t kind;
    if (!r.U8(&kind)) return Code::kMalformed;
    if (kind == kKeyInt) {
      int64_t v;
      if (!r.I64(&v)) return Code::kMalformed;
      keys[i] = Key::Int(v);
    } else if (kind == kKeyStr) {
      std::string_view s;
      c = r.Str16(limits.max_key_bytes, &s);
      if (c != Code::kOk) return c;
      keys[i] = Key::Str(s);
    } else {
      return Code::kBadKeyKind;
    }
  }
  uint32_t n_fields;
  if (!r.U32(&n_fields)) return Code::kMalformed;
  if (n_fields > limits.max_fields || n_fields > field_cap) return Code::kTooMany;
  const uint8_t* raw;
  if (!View(r, n_fields, sizeof(double), &raw)) return Code::kMalformed;
  CopyF64(raw, n_fields, fields);
  out->keys = keys;
  out->n_keys = n_keys;
  out->fields = fields;
  out->n_fields = n_fields;
  return Finish(r, f);
}

// u16 n_outputs, f64[n_outputs]
size_t EncodeScoreResponse(uint64_t id, const ScoreResponse& m, uint8_t* out, size_t cap) noexcept {
  FrameBuilder b(out, cap, static_cast<uint16_t>(Opcode::kScore), kFlagResponse, 0, id);
  if (m.n_outputs > 0xFFFF) return 0;
  b.w.U16(static_cast<uint16_t>(m.n_outputs));
  b.Array(m.outputs, m.n_outputs, sizeof(double));
  return b.Finish();
}

Code DecodeScoreResponse(const Frame& f, ScoreResponse* out) noexcept {
  if (ResponseStatus(f) != 0) return static_cast<Code>(ResponseStatus(f));
  Reader r = PayloadReader(f);
  uint16_t n;
  if (!r.U16(&n) || !r.Bytes(size_t{n} * sizeof(double), &out->raw)) return Code::kMalformed;
  out->outputs = nullptr;
  out->n_outputs = n;
  return Finish(r, f);
}

// ---- PREDICT: str16 model, u8 dtype, u8 reserved, u32 n_rows, u32 n_cols,
// values row-major (f32 or f64) ----

size_t EncodePredictRequest(uint64_t id, const PredictRequest& m, uint8_t* out, size_t cap) noexcept {
  FrameBuilder b(out, cap, static_cast<uint16_t>(Opcode::kPredict), 0, 0, id);
  b.Str16(m.model);
  b.w.U8(static_cast<uint8_t>(m.dtype));
  b.w.U8(0);
  b.w.U32(m.n_rows);
  b.w.U32(m.n_cols);
  const size_t item = m.dtype == DType::kFloat32 ? sizeof(float) : sizeof(double);
  b.Array(m.data, uint64_t{m.n_rows} * m.n_cols, item);
  return b.Finish();
}

Code DecodePredictRequest(const Frame& f, const Limits& limits, PredictRequest* out) noexcept {
  Reader r = PayloadReader(f);
  const Code c = r.Str16(limits.max_name_bytes, &out->model);
  if (c != Code::kOk) return c;
  uint8_t dtype, reserved;
  if (!r.U8(&dtype) || !r.U8(&reserved) || !r.U32(&out->n_rows) || !r.U32(&out->n_cols)) return Code::kMalformed;
  if (dtype > static_cast<uint8_t>(DType::kFloat64)) return Code::kBadDType;
  if (reserved != 0 && f.header.minor <= kVersionMinor) return Code::kMalformed;
  // Zero-width rows would let a tiny frame ask for billions of outputs.
  if (out->n_cols == 0 && out->n_rows != 0) return Code::kBadShape;
  out->dtype = static_cast<DType>(dtype);
  const size_t item = out->dtype == DType::kFloat32 ? sizeof(float) : sizeof(double);
  const uint8_t* raw;
  if (!View(r, uint64_t{out->n_rows} * out->n_cols, item, &raw)) return Code::kMalformed;  // < 2^64: both u32
  out->data = raw;
  return Finish(r, f);
}

// u32 n_rows, u32 n_outputs, f64[n_rows * n_outputs]
size_t EncodePredictResponse(uint64_t id, const PredictResponse& m, uint8_t* out, size_t cap) noexcept {
  FrameBuilder b(out, cap, static_cast<uint16_t>(Opcode::kPredict), kFlagResponse, 0, id);
  b.w.U32(m.n_rows);
  b.w.U32(m.n_outputs);
  b.Array(m.values, uint64_t{m.n_rows} * m.n_outputs, sizeof(double));
  return b.Finish();
}

Code DecodePredictResponse(const Frame& f, PredictResponse* out) noexcept {
  if (ResponseStatus(f) != 0) return static_cast<Code>(ResponseStatus(f));
  Reader r = PayloadReader(f);
  if (!r.U32(&out->n_rows) || !r.U32(&out->n_outputs) ||
      !View(r, uint64_t{out->n_rows} * out->n_outputs, sizeof(double), &out->raw)) {
    return Code::kMalformed;
  }
  out->values = nullptr;
  return Finish(r, f);
}

// ---- SCORE_BATCH: str16 scorer, u32 n_rows, u16 n_keys, u32 n_fields,
// n_keys key columns of n_rows, f64[n_rows * n_fields] row-major ----

size_t EncodeScoreBatchRequest(uint64_t id, const ScoreBatchRequest& m, uint8_t* out, size_t cap) noexcept {
  FrameBuilder b(out, cap, static_cast<uint16_t>(Opcode::kScoreBatch), 0, 0, id);
  b.Str16(m.scorer);
  b.w.I64(m.now_ns);
  b.w.U32(m.n_rows);
  b.w.U16(m.n_keys);
  b.w.U32(m.n_fields);
  // With no rows, keys may be null (and null + k is undefined).
  for (size_t k = 0; k < m.n_keys; ++k) b.KeyColumn(m.n_rows == 0 ? m.keys : m.keys + k, m.n_rows, m.n_keys);
  b.Array(m.fields, uint64_t{m.n_rows} * m.n_fields, sizeof(double));
  return b.Finish();
}

Code DecodeScoreBatchRequest(const Frame& f, const Limits& limits, Key* keys, size_t key_cap,
                             ScoreBatchRequest* out) noexcept {
  Reader r = PayloadReader(f);
  const Code c = r.Str16(limits.max_name_bytes, &out->scorer);
  if (c != Code::kOk) return c;
  if (!r.I64(&out->now_ns) || !r.U32(&out->n_rows) || !r.U16(&out->n_keys) || !r.U32(&out->n_fields)) {
    return Code::kMalformed;
  }
  if (out->n_rows > limits.max_rows || out->n_keys > limits.max_keys || out->n_fields > limits.max_fields ||
      uint64_t{out->n_rows} * out->n_keys > key_cap) {
    return Code::kTooMany;
  }
  for (size_t k = 0; k < out->n_keys; ++k) {
    const Code kc = ReadKeyColumn(r, limits, out->n_rows, out->n_rows == 0 ? keys : keys + k, out->n_keys);
    if (kc != Code::kOk) return kc;
  }
  const uint8_t* raw;
  if (!View(r, uint64_t{out->n_rows} * out->n_fields, sizeof(double), &raw)) return Code::kMalformed;
  out->keys = keys;
  out->fields = raw;
  return Finish(r, f);
}

// u32 n_rows, u16 n_outputs, u16 reserved, f64[n_rows * n_outputs], u8[n_rows]
size_t EncodeScoreBatchResponse(uint64_t id, const ScoreBatchResponse& m, uint8_t* out, size_t cap) noexcept {
  FrameBuilder b(out, cap, static_cast<uint16_t>(Opcode::kScoreBatch), kFlagResponse, 0, id);
  b.w.U32(m.n_rows);
  b.w.U16(m.n_outputs);
  b.w.U16(0);
  b.Array(m.outputs, uint64_t{m.n_rows} * m.n_outputs, sizeof(double));
  b.Array(m.status, m.n_rows, 1);
  return b.Finish();
}

Code DecodeScoreBatchResponse(const Frame& f, ScoreBatchResponse* out) noexcept {
  if (ResponseStatus(f) != 0) return static_cast<Code>(ResponseStatus(f));
  Reader r = PayloadReader(f);
  uint16_t reserved;
  if (!r.U32(&out->n_rows) || !r.U16(&out->n_outputs) || !r.U16(&reserved)) return Code::kMalformed;
  if (reserved != 0 && f.header.minor <= kVersionMinor) return Code::kMalformed;
  if (!View(r, uint64_t{out->n_rows} * out->n_outputs, sizeof(double), &out->raw) ||
      !View(r, out->n_rows, 1, &out->status)) {
    return Code::kMalformed;
  }
  out->outputs = nullptr;
  return Finish(r, f);
}

// ---- GET_FEATURES: str16 table, i64 now_ns, u32 n_keys, key column ----

size_t EncodeGetFeaturesRequest(uint64_t id, const GetFeaturesRequest& m, uint8_t* out, size_t cap) noexcept {
  FrameBuilder b(out, cap, static_cast<uint16_t>(Opcode::kGetFeatures), 0, 0, id);
  b.Str16(m.table);
  b.w.I64(m.now_ns);
  b.w.U32(m.n_keys);
  b.KeyColumn(m.keys, m.n_keys, 1);
  return b.Finish();
}

Code DecodeGetFeaturesRequest(const Frame& f, const Limits& limits, Key* keys, size_t key_cap,
                              GetFeaturesRequest* out) noexcept {
  Reader r = PayloadReader(f);
  Code c = r.Str16(limits.max_name_bytes, &out->table);
  if (c != Code::kOk) return c;
  if (!r.I64(&out->now_ns) || !r.U32(&out->n_keys)) return Code::kMalformed;
  if (out->n_keys > limits.max_rows || out->n_keys > key_cap) return Code::kTooMany;
  c = ReadKeyColumn(r, limits, out->n_keys, keys, 1);
  if (c != Code::kOk) return c;
  out->keys = keys;
  return Finish(r, f);
}

// u32 n_keys, u32 n_fields, u8 found[n_keys], i64 event_ns[n_keys],
// f64 values[n_keys * n_fields]
size_t EncodeGetFeaturesResponse(uint64_t id, const GetFeaturesResponse& m, uint8_t* out, size_t cap) noexcept {
  FrameBuilder b(out, cap, static_cast<uint16_t>(Opcode::kGetFeatures), kFlagResponse, 0, id);
  b.w.U32(m.n_keys);
  b.w.U32(m.n_fields);
  b.Array(m.found, m.n_keys, 1);
  b.Array(m.event_ns, m.n_keys, sizeof(int64_t));
  b.Array(m.values, uint64_t{m.n_keys} * m.n_fields, sizeof(double));
  return b.Finish();
}

Code DecodeGetFeaturesResponse(const Frame& f, GetFeaturesResponse* out) noexcept {
  if (ResponseStatus(f) != 0) return static_cast<Code>(ResponseStatus(f));
  Reader r = PayloadReader(f);
  if (!r.U32(&out->n_keys) || !r.U32(&out->n_fields)) return Code::kMalformed;
  if (!View(r, out->n_keys, 1, &out->found) || !View(r, out->n_keys, sizeof(int64_t), &out->raw_event_ns) ||
      !View(r, uint64_t{out->n_keys} * out->n_fields, sizeof(double), &out->raw_values)) {
    return Code::kMalformed;
  }
  for (uint32_t i = 0; i < out->n_keys; ++i) {
    if (out->found[i] > 1) return Code::kMalformed;
  }
  out->event_ns = nullptr;
  out->values = nullptr;
  return Finish(r, f);
}

// ---- PUT_FEATURES: str16 table, u32 n_rows, u32 n_fields, key column,
// i64 event_ns[n_rows], f64 values[n_rows * n_fields] ----

size_t EncodePutFeaturesRequest(uint64_t id, const PutFeaturesRequest& m, uint8_t* out, size_t cap) noexcept {
  FrameBuilder b(out, cap, static_cast<uint16_t>(Opcode::kPutFeatures), 0, 0, id);
  b.Str16(m.table);
  b.w.U32(m.n_rows);
  b.w.U32(m.n_fields);
  b.KeyedRows(m.keys, m.n_rows, m.n_fields, m.event_ns, m.values);
  return b.Finish();
}

Code DecodePutFeaturesRequest(const Frame& f, const Limits& limits, Key* keys, size_t key_cap,
                              PutFeaturesRequest* out) noexcept {
  Reader r = PayloadReader(f);
  Code c = r.Str16(limits.max_name_bytes, &out->table);
  if (c != Code::kOk) return c;
  if (!r.U32(&out->n_rows) || !r.U32(&out->n_fields)) return Code::kMalformed;
  if (out->n_rows > limits.max_rows || out->n_rows > key_cap || out->n_fields > limits.max_fields) {
    return Code::kTooMany;
  }
  c = ReadKeyedRows(r, limits, out->n_rows, out->n_fields, keys, &out->event_ns, &out->values);
  if (c != Code::kOk) return c;
  out->keys = keys;
  return Finish(r, f);
}

// u32 n_rows, u8 status[n_rows]
size_t EncodePutFeaturesResponse(uint64_t id, const PutFeaturesResponse& m, uint8_t* out, size_t cap) noexcept {
  FrameBuilder b(out, cap, static_cast<uint16_t>(Opcode::kPutFeatures), kFlagResponse, 0, id);
  b.w.U32(m.n_rows);
  b.Array(m.status, m.n_rows, 1);
  return b.Finish();
}

Code DecodePutFeaturesResponse(const Frame& f, PutFeaturesResponse* out) noexcept {
  if (ResponseStatus(f) != 0) return static_cast<Code>(ResponseStatus(f));
  Reader r = PayloadReader(f);
  if (!r.U32(&out->n_rows) || !View(r, out->n_rows, 1, &out->status)) return Code::kMalformed;
  return Finish(r, f);
}

// ---- INGEST: str16 window_set, u32 n_events, key column, i64 event_ns[n],
// f64 values[n] ----

size_t EncodeIngestRequest(uint64_t id, const IngestRequest& m, uint8_t* out, size_t cap) noexcept {
  FrameBuilder b(out, cap, static_cast<uint16_t>(Opcode::kIngest), 0, 0, id);
  b.Str16(m.window_set);
  b.w.U32(m.n_events);
  b.KeyedRows(m.keys, m.n_events, 1, m.event_ns, m.values);
  return b.Finish();
}

Code DecodeIngestRequest(const Frame& f, const Limits& limits, Key* keys, size_t key_cap,
                         IngestRequest* out) noexcept {
  Reader r = PayloadReader(f);
  Code c = r.Str16(limits.max_name_bytes, &out->window_set);
  if (c != Code::kOk) return c;
  if (!r.U32(&out->n_events)) return Code::kMalformed;
  if (out->n_events > limits.max_rows || out->n_events > key_cap) return Code::kTooMany;
  c = ReadKeyedRows(r, limits, out->n_events, 1, keys, &out->event_ns, &out->values);
  if (c != Code::kOk) return c;
  out->keys = keys;
  return Finish(r, f);
}

// u32 accepted, u32 dropped
size_t EncodeIngestResponse(uint64_t id, const IngestResponse& m, uint8_t* out, size_t cap) noexcept {
  FrameBuilder b(out, cap, static_cast<uint16_t>(Opcode::kIngest), kFlagResponse, 0, id);
  b.w.U32(m.accepted);
  b.w.U32(m.dropped);
  return b.Finish();
}

Code DecodeIngestResponse(const Frame& f, IngestResponse* out) noexcept {
  if (ResponseStatus(f) != 0) return static_cast<Code>(ResponseStatus(f));
  Reader r = PayloadReader(f);
  r.U32(&out->accepted);
  r.U32(&out->dropped);
  return Finish(r, f);
}

// ---- STATS: str16 name; response u32 length + UTF-8 JSON ----

size_t EncodeStatsRequest(uint64_t id, std::string_view name, uint8_t* out, size_t cap) noexcept {
  FrameBuilder b(out, cap, static_cast<uint16_t>(Opcode::kStats), 0, 0, id);
  b.Str16(name);
  return b.Finish();
}

Code DecodeStatsRequest(const Frame& f, const Limits& limits, std::string_view* name) noexcept {
  return DecodeStr16Payload(f, limits.max_name_bytes, name);
}

size_t EncodeStatsResponse(uint64_t id, std::string_view json, uint8_t* out, size_t cap) noexcept {
  FrameBuilder b(out, cap, static_cast<uint16_t>(Opcode::kStats), kFlagResponse, 0, id);
  b.Blob32(json.data(), json.size());
  return b.Finish();
}

Code DecodeStatsResponse(const Frame& f, std::string_view* json) noexcept {
  *json = {};
  if (ResponseStatus(f) != 0) return static_cast<Code>(ResponseStatus(f));
  Reader r = PayloadReader(f);
  const uint8_t* data;
  uint32_t n;
  if (!ReadBlob32(r, &data, &n)) return Code::kMalformed;
  *json = std::string_view(reinterpret_cast<const char*>(data), n);
  return Finish(r, f);
}

// ---- MODEL_LOAD: str16 name, u8 source, str16 path | u32 length + bytes;
// response str16 version ----

size_t EncodeModelLoadRequest(uint64_t id, const ModelLoadRequest& m, uint8_t* out, size_t cap) noexcept {
  FrameBuilder b(out, cap, static_cast<uint16_t>(Opcode::kModelLoad), 0, 0, id);
  b.Str16(m.name);
  b.w.U8(static_cast<uint8_t>(m.source));
  if (m.source == ModelSource::kPath) {
    b.Str16(m.path);
  } else if (m.source == ModelSource::kInline) {
    b.Blob32(m.data, m.size);
  } else {
    b.Invalid();
  }
  return b.Finish();
}

Code DecodeModelLoadRequest(const Frame& f, const Limits& limits, ModelLoadRequest* out) noexcept {
  *out = ModelLoadRequest{};  // the source not taken stays empty
  Reader r = PayloadReader(f);
  Code c = r.Str16(limits.max_name_bytes, &out->name);
  if (c != Code::kOk) return c;
  uint8_t source;
  if (!r.U8(&source)) return Code::kMalformed;
  if (source == static_cast<uint8_t>(ModelSource::kPath)) {
    c = r.Str16(kMaxPathBytes, &out->path);
    if (c != Code::kOk) return c;
  } else if (source == static_cast<uint8_t>(ModelSource::kInline)) {
    if (!ReadBlob32(r, &out->data, &out->size)) return Code::kMalformed;
  } else {
    return Code::kBadValue;
  }
  out->source = static_cast<ModelSource>(source);
  return Finish(r, f);
}

size_t EncodeModelLoadResponse(uint64_t id, std::string_view version, uint8_t* out, size_t cap) noexcept {
  return EncodeStr16Response(Opcode::kModelLoad, id, version, out, cap);
}

Code DecodeModelLoadResponse(const Frame& f, const Limits& limits, std::string_view* version) noexcept {
  *version = {};
  if (ResponseStatus(f) != 0) return static_cast<Code>(ResponseStatus(f));
  return DecodeStr16Payload(f, limits.max_name_bytes, version);
}

// ---- MODEL_SWAP: str16 scorer, str16 model, u8 role, str16 arm;
// response str16 previous version ----

size_t EncodeModelSwapRequest(uint64_t id, const ModelSwapRequest& m, uint8_t* out, size_t cap) noexcept {
  FrameBuilder b(out, cap, static_cast<uint16_t>(Opcode::kModelSwap), 0, 0, id);
  b.Str16(m.scorer);
  b.Str16(m.model);
  if (m.role != ModelRole::kPrimary && m.role != ModelRole::kShadow) b.Invalid();
  b.w.U8(static_cast<uint8_t>(m.role));
  b.Str16(m.arm);
  return b.Finish();
}

Code DecodeModelSwapRequest(const Frame& f, const Limits& limits, ModelSwapRequest* out) noexcept {
  Reader r = PayloadReader(f);
  Code c = r.Str16(limits.max_name_bytes, &out->scorer);
  if (c == Code::kOk) c = r.Str16(limits.max_name_bytes, &out->model);
  if (c != Code::kOk) return c;
  uint8_t role;
  if (!r.U8(&role)) return Code::kMalformed;
  if (role > static_cast<uint8_t>(ModelRole::kShadow)) return Code::kBadValue;
  out->role = static_cast<ModelRole>(role);
  c = r.Str16(limits.max_name_bytes, &out->arm);
  return c != Code::kOk ? c : Finish(r, f);
}

size_t EncodeModelSwapResponse(uint64_t id, std::string_view previous, uint8_t* out, size_t cap) noexcept {
  return EncodeStr16Response(Opcode::kModelSwap, id, previous, out, cap);
}

Code DecodeModelSwapResponse(const Frame& f, const Limits& limits, std::string_view* previous) noexcept {
  *previous = {};
  if (ResponseStatus(f) != 0) return static_cast<Code>(ResponseStatus(f));
  return DecodeStr16Payload(f, limits.max_name_bytes, previous);
}

// ---- Error response: str16 message (header status = the code) ----

size_t EncodeError(uint16_t opcode, uint64_t id, Code code, std::string_view message, bool closing, uint8_t* out,
                   size_t cap) noexcept {
  const uint16_t flags = kFlagResponse | (closing ? kFlagClosing : 0);
  FrameBuilder b(out, cap, opcode, flags, static_cast<uint16_t>(code), id);
  b.Str16(message.substr(0, kMaxMessageBytes));
  return b.Finish();
}

Code DecodeError(const Frame& f, Code* code, std::string_view* message) noexcept {
  *code = static_cast<Code>(f.header.status);
  *message = {};
  if (f.header.status == 0) return Code::kMalformed;  // not an error response
  Reader r = PayloadReader(f);
  const Code c = r.Str16(kMaxMessageBytes, message);
  if (c != Code::kOk) return c;
  return Finish(r, f);
}

}  // namespace rtml::wire

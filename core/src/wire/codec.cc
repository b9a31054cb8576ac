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
  if (!r.U16(&n_keys)) return Code::kMalformed;
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
  if (!r.CanHold(n_fields, sizeof(double)) || !r.Bytes(n_fields * sizeof(double), &raw)) return Code::kMalformed;
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
  const uint64_t n = uint64_t{out->n_rows} * out->n_cols;  // < 2^64: both are u32
  const uint8_t* raw;
  if (!r.CanHold(n, item) || !r.Bytes(static_cast<size_t>(n) * item, &raw)) return Code::kMalformed;
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
  if (!r.U32(&out->n_rows) || !r.U32(&out->n_outputs)) return Code::kMalformed;
  const uint64_t n = uint64_t{out->n_rows} * out->n_outputs;
  if (!r.CanHold(n, sizeof(double)) || !r.Bytes(static_cast<size_t>(n) * sizeof(double), &out->raw)) {
    return Code::kMalformed;
  }
  out->values = nullptr;
  return Finish(r, f);
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

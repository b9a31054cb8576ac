// rtml wire codec: the framing and message layouts of docs/protocol.md.
//
// A frame is a fixed 24-byte little-endian header (magic, version, opcode,
// flags, status, request id, payload length) and a payload. FrameSplitter cuts
// complete frames out of a receive buffer; typed Encode*/Decode* functions
// write and read each message's payload. Decoded strings, keys and arrays are
// views into the caller's buffer (no copy, no allocation): they live as long
// as that buffer.
//
// Safety: every read goes through Reader, which checks the remaining length
// before it touches a byte, and every count read off the wire is checked
// against the bytes left before any loop runs on it, so no input (truncated,
// corrupted, lying) can over-read, allocate or loop longer than its own size.
//
// Thread-safety: free functions and Limits are stateless or immutable; a
// Reader, Writer or FrameSplitter belongs to one thread at a time.
// Progress: wait-free; nothing here blocks, allocates or throws (all noexcept).
// Cost: O(bytes of the frame); numbers are copied with memcpy.
// Limits: little-endian hosts only (checked at compile time); payloads up to
// Limits::max_payload (default 16 MiB, at most 4 GiB - 1); strings are u16-length
// prefixed and further capped by Limits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "rtml/feature_table.h"
#include "rtml/forest.h"
#include "rtml/wire_codes.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "rtml's wire codec assumes a little-endian host"
#endif

namespace rtml::wire {

inline constexpr uint32_t kMagic = 0x4C4D5452;  // the bytes "RTML"
inline constexpr uint8_t kVersionMajor = 1;
inline constexpr uint8_t kVersionMinor = 0;
inline constexpr size_t kHeaderSize = 24;
inline constexpr uint16_t kOpcodeNone = 0;  // connection-level error frames

// Header flag bits; every other bit is reserved and must be zero.
inline constexpr uint16_t kFlagResponse = 1u << 0;
inline constexpr uint16_t kFlagClosing = 1u << 1;  // response only: sender closes next
inline constexpr uint16_t kKnownFlags = kFlagResponse | kFlagClosing;

// Error messages are cut to this many bytes when encoded.
inline constexpr size_t kMaxMessageBytes = 4096;
// MODEL_LOAD paths on the server.
inline constexpr uint16_t kMaxPathBytes = 4096;

enum class Opcode : uint16_t {
#define RTML_X(name, value, wire_name) name = value,
  RTML_OPCODES(RTML_X)
#undef RTML_X
};

enum class Code : uint16_t {
#define RTML_X(name, value, wire_name) name = value,
  RTML_STATUS_CODES(RTML_X)
#undef RTML_X
};

// "HELLO", ... or nullptr for a value not in the list.
const char* OpcodeName(uint16_t opcode) noexcept;
// "OK", "BAD_MAGIC", ... or nullptr for a value not in the list.
const char* CodeName(uint16_t code) noexcept;
// True for codes after which the sender closes the connection.
bool IsFatal(Code code) noexcept;

// Receiver-side limits (configurable per server or client). A peer exceeding
// max_payload is cut off (the length cannot be trusted); the others turn one
// request into an error response.
struct Limits {
  uint32_t max_payload = 16u << 20;
  uint16_t max_name_bytes = 255;    // scorer, model, table and window names
  uint16_t max_key_bytes = 1024;    // one string entity key
  uint16_t max_token_bytes = 1024;  // HELLO auth token
  uint16_t max_keys = 64;           // entity keys per SCORE request
  uint32_t max_fields = 4096;       // request fields per SCORE request (or per row)
  uint32_t max_rows = 65536;        // rows, keys or events per batch request
};

struct Header {
  uint8_t major = kVersionMajor;
  uint8_t minor = kVersionMinor;
  uint16_t opcode = 0;
  uint16_t flags = 0;
  uint16_t status = 0;
  uint64_t request_id = 0;
  uint32_t payload_len = 0;
};

// Parses the first kHeaderSize bytes of p. Fatal codes: kBadMagic,
// kUnsupportedVersion (another major), kFrameTooLarge (payload_len above the
// limit), kMalformed (n < kHeaderSize). Opcode and flags are not judged here:
// see CheckRequestHeader.
Code ParseHeader(const uint8_t* p, size_t n, const Limits& limits, Header* out) noexcept;
void WriteHeader(const Header& h, uint8_t* out) noexcept;
// Per-frame (non-fatal) checks of a request: kUnknownOpcode, kBadFlags
// (reserved bits or the response bit set), kMalformed (nonzero status).
Code CheckRequestHeader(const Header& h) noexcept;

struct Frame {
  Header header;
  const uint8_t* payload = nullptr;  // header.payload_len bytes
  size_t size = 0;                   // kHeaderSize + payload_len
};

enum class SplitResult : uint8_t { kFrame = 0, kNeedMore = 1, kFatal = 2 };

// Cuts complete frames off the front of a buffer. A malformed prefix is
// reported as soon as the bytes that prove it have arrived (a wrong magic byte
// fails on that byte), and a valid prefix is always kNeedMore.
class FrameSplitter {
 public:
  FrameSplitter(const uint8_t* data, size_t size, const Limits& limits) noexcept
      : data_(data), size_(size), limits_(limits) {}
  // kFrame: *frame is the next frame and consumed() moved past it.
  // kNeedMore: consumed() is where the next read must resume.
  // kFatal: *error says why; the stream cannot be resynchronized.
  SplitResult Next(Frame* frame, Code* error) noexcept;
  size_t consumed() const noexcept { return pos_; }

 private:
  const uint8_t* data_;
  size_t size_;
  Limits limits_;
  size_t pos_ = 0;
};

// Bounds-checked little-endian read cursor. A failed read leaves its output
// zeroed and makes ok() false for good; later reads fail too, so a decoder may
// check once at the end, as long as it checks counts before looping on them.
class Reader {
 public:
  Reader(const uint8_t* p, size_t n) noexcept : p_(p), end_(p + n) {}
  bool U8(uint8_t* v) noexcept { return Fixed(v); }
  bool U16(uint16_t* v) noexcept { return Fixed(v); }
  bool U32(uint32_t* v) noexcept { return Fixed(v); }
  bool U64(uint64_t* v) noexcept { return Fixed(v); }
  bool I64(int64_t* v) noexcept { return Fixed(v); }
  bool F64(double* v) noexcept { return Fixed(v); }
  // n raw bytes, viewed in place.
  bool Bytes(size_t n, const uint8_t** out) noexcept;
  // u16 length + bytes. kStringTooLong if the length exceeds max (the bytes
  // are still skipped when present), kMalformed if truncated.
  Code Str16(uint16_t max, std::string_view* out) noexcept;
  size_t remaining() const noexcept { return ok_ ? static_cast<size_t>(end_ - p_) : 0; }
  bool ok() const noexcept { return ok_; }
  // True if n items of item_size bytes each could still follow.
  bool CanHold(uint64_t n, size_t item_size) const noexcept {
    return ok_ && n <= remaining() / item_size;
  }

 private:
  template <typename T>
  bool Fixed(T* v) noexcept {
    if (!ok_ || static_cast<size_t>(end_ - p_) < sizeof(T)) {
      ok_ = false;
      *v = T{};
      return false;
    }
    std::memcpy(v, p_, sizeof(T));
    p_ += sizeof(T);
    return true;
  }
  const uint8_t* p_;
  const uint8_t* end_;
  bool ok_ = true;
};

// Little-endian writer into a caller buffer. Past the capacity it stops
// writing but keeps counting, so size() is the bytes needed: encode once with
// a small buffer, and again with size() bytes if !fits().
class Writer {
 public:
  Writer(uint8_t* p, size_t cap) noexcept : p_(p), cap_(cap) {}
  void U8(uint8_t v) noexcept { Raw(&v, 1); }
  void U16(uint16_t v) noexcept { Raw(&v, 2); }
  void U32(uint32_t v) noexcept { Raw(&v, 4); }
  void U64(uint64_t v) noexcept { Raw(&v, 8); }
  void I64(int64_t v) noexcept { Raw(&v, 8); }
  void F64(double v) noexcept { Raw(&v, 8); }
  void Raw(const void* src, size_t n) noexcept {
    if (n != 0 && fits_ && n <= cap_ - size_) {
      std::memcpy(p_ + size_, src, n);
    } else if (n != 0) {
      fits_ = false;
    }
    size_ += n;
  }
  // u16 length + bytes; callers check the length (EncodeStr16 does).
  void Str16(std::string_view s) noexcept {
    U16(static_cast<uint16_t>(s.size()));
    Raw(s.data(), s.size());
  }
  size_t size() const noexcept { return size_; }
  bool fits() const noexcept { return fits_; }
  uint8_t* data() const noexcept { return p_; }

 private:
  uint8_t* p_;
  size_t cap_;
  size_t size_ = 0;
  bool fits_ = true;
};

// ---- Messages. Layouts: docs/protocol.md. ----

struct HelloRequest {
  uint8_t major = kVersionMajor;
  uint8_t minor = kVersionMinor;
  std::string_view token;  // empty: none
};

struct HelloResponse {
  uint8_t major = kVersionMajor;
  uint8_t minor = kVersionMinor;
  uint32_t max_payload = 0;
  uint32_t max_in_flight = 0;
  std::string_view server;  // e.g. "rtml/0.4.0"
};

// keys and fields point into caller buffers (decode) or caller data (encode).
struct ScoreRequest {
  std::string_view scorer;
  int64_t now_ns = 0;  // the time stored features are read at; 0: the server's clock
  const Key* keys = nullptr;
  size_t n_keys = 0;
  const double* fields = nullptr;
  size_t n_fields = 0;
};

struct ScoreResponse {
  const double* outputs = nullptr;  // encode: values; decode: use CopyF64
  const uint8_t* raw = nullptr;     // decode only: n_outputs little-endian f64
  size_t n_outputs = 0;
};

// A row-major float32 or float64 matrix. data is unaligned wire bytes after
// decoding: copy it out with CopyF32 / CopyF64 (or read it with memcpy).
struct PredictRequest {
  std::string_view model;
  DType dtype = DType::kFloat32;
  uint32_t n_rows = 0;
  uint32_t n_cols = 0;
  const void* data = nullptr;
};

struct PredictResponse {
  uint32_t n_rows = 0;
  uint32_t n_outputs = 0;
  const double* values = nullptr;  // encode only
  const uint8_t* raw = nullptr;    // decode only: n_rows * n_outputs f64
};

// A batch's keys are row-major: key k of row r is keys[r * n_keys + k]
// (what Scorer::ScoreMany takes). On the wire each key position is one
// column of a single kind; encoding a column whose rows mix kinds fails (0).
// Arrays are typed caller data when encoding and unaligned wire bytes after
// decoding: copy them out with CopyF64 / CopyI64.
struct ScoreBatchRequest {
  std::string_view scorer;
  int64_t now_ns = 0;  // 0: the server's clock
  uint32_t n_rows = 0;
  uint16_t n_keys = 0;  // keys per row
  uint32_t n_fields = 0;  // fields per row
  const Key* keys = nullptr;     // n_rows * n_keys, row-major
  const void* fields = nullptr;  // f64[n_rows * n_fields], row-major
};

struct ScoreBatchResponse {
  uint32_t n_rows = 0;
  uint16_t n_outputs = 0;
  const double* outputs = nullptr;  // encode only: n_rows * n_outputs, row-major
  const uint8_t* raw = nullptr;     // decode only: n_rows * n_outputs f64
  const uint8_t* status = nullptr;  // n_rows row codes: 0 ok, else a Code (row is NaN)
};

struct GetFeaturesRequest {
  std::string_view table;
  int64_t now_ns = 0;  // 0: the server's clock
  uint32_t n_keys = 0;
  const Key* keys = nullptr;
};

struct GetFeaturesResponse {
  uint32_t n_keys = 0;
  uint32_t n_fields = 0;
  const uint8_t* found = nullptr;      // n_keys: 1 found, 0 missing or expired
  const int64_t* event_ns = nullptr;   // encode only: n_keys, 0 when missing
  const double* values = nullptr;      // encode only: n_keys * n_fields, NaN when missing
  const uint8_t* raw_event_ns = nullptr;  // decode only
  const uint8_t* raw_values = nullptr;    // decode only
};

struct PutFeaturesRequest {
  std::string_view table;
  uint32_t n_rows = 0;
  uint32_t n_fields = 0;
  const Key* keys = nullptr;       // n_rows
  const void* event_ns = nullptr;  // i64[n_rows]
  const void* values = nullptr;    // f64[n_rows * n_fields], row-major
};

// Per-row status of PUT_FEATURES beyond the Code values: the row was older
// than the stored record and ignored.
inline constexpr uint8_t kRowStale = 1;

struct PutFeaturesResponse {
  uint32_t n_rows = 0;
  const uint8_t* status = nullptr;  // n_rows: 0 ok, kRowStale, else a Code
};

struct IngestRequest {
  std::string_view window_set;
  uint32_t n_events = 0;
  const Key* keys = nullptr;       // n_events
  const void* event_ns = nullptr;  // i64[n_events]
  const void* values = nullptr;    // f64[n_events]
};

struct IngestResponse {
  uint32_t accepted = 0;
  uint32_t dropped = 0;  // too old for every window: counted, not stored
};

enum class ModelSource : uint8_t { kPath = 0, kInline = 1 };

struct ModelLoadRequest {
  std::string_view name;
  ModelSource source = ModelSource::kPath;
  std::string_view path;          // kPath: a file on the server, at most kMaxPathBytes
  const uint8_t* data = nullptr;  // kInline: an rtml compiled model file's bytes
  uint32_t size = 0;
};

enum class ModelRole : uint8_t { kPrimary = 0, kShadow = 1 };

struct ModelSwapRequest {
  std::string_view scorer;
  std::string_view model;  // a loaded model's name
  ModelRole role = ModelRole::kPrimary;
  std::string_view arm;  // empty: the primary (or only) arm
};

// Encoders write one whole frame (header + payload) into out[0, cap) and
// return its size; if the size is above cap, nothing usable was written:
// retry with that many bytes. They return 0 for a message that no receiver
// with default limits could accept (a string or payload over its u16/u32 size).
size_t EncodeHelloRequest(uint64_t id, const HelloRequest& m, uint8_t* out, size_t cap) noexcept;
size_t EncodeHelloResponse(uint64_t id, const HelloResponse& m, uint8_t* out, size_t cap) noexcept;
// PING carries opaque bytes that the response echoes.
size_t EncodePing(uint64_t id, uint16_t flags, std::string_view echo, uint8_t* out, size_t cap) noexcept;
size_t EncodeScoreRequest(uint64_t id, const ScoreRequest& m, uint8_t* out, size_t cap) noexcept;
size_t EncodeScoreResponse(uint64_t id, const ScoreResponse& m, uint8_t* out, size_t cap) noexcept;
size_t EncodePredictRequest(uint64_t id, const PredictRequest& m, uint8_t* out, size_t cap) noexcept;
size_t EncodePredictResponse(uint64_t id, const PredictResponse& m, uint8_t* out, size_t cap) noexcept;
size_t EncodeScoreBatchRequest(uint64_t id, const ScoreBatchRequest& m, uint8_t* out, size_t cap) noexcept;
size_t EncodeScoreBatchResponse(uint64_t id, const ScoreBatchResponse& m, uint8_t* out, size_t cap) noexcept;
size_t EncodeGetFeaturesRequest(uint64_t id, const GetFeaturesRequest& m, uint8_t* out, size_t cap) noexcept;
size_t EncodeGetFeaturesResponse(uint64_t id, const GetFeaturesResponse& m, uint8_t* out, size_t cap) noexcept;
size_t EncodePutFeaturesRequest(uint64_t id, const PutFeaturesRequest& m, uint8_t* out, size_t cap) noexcept;
size_t EncodePutFeaturesResponse(uint64_t id, const PutFeaturesResponse& m, uint8_t* out, size_t cap) noexcept;
size_t EncodeIngestRequest(uint64_t id, const IngestRequest& m, uint8_t* out, size_t cap) noexcept;
size_t EncodeIngestResponse(uint64_t id, const IngestResponse& m, uint8_t* out, size_t cap) noexcept;
// STATS request: a scorer, table or window set name (empty: everything).
size_t EncodeStatsRequest(uint64_t id, std::string_view name, uint8_t* out, size_t cap) noexcept;
// STATS response: a UTF-8 JSON document.
size_t EncodeStatsResponse(uint64_t id, std::string_view json, uint8_t* out, size_t cap) noexcept;
size_t EncodeModelLoadRequest(uint64_t id, const ModelLoadRequest& m, uint8_t* out, size_t cap) noexcept;
// MODEL_LOAD response: the loaded model's version.
size_t EncodeModelLoadResponse(uint64_t id, std::string_view version, uint8_t* out, size_t cap) noexcept;
size_t EncodeModelSwapRequest(uint64_t id, const ModelSwapRequest& m, uint8_t* out, size_t cap) noexcept;
// MODEL_SWAP response: the version the swap replaced.
size_t EncodeModelSwapResponse(uint64_t id, std::string_view previous, uint8_t* out, size_t cap) noexcept;
// An error response to `opcode` (kOpcodeNone for connection-level errors);
// message is cut to kMaxMessageBytes. closing sets kFlagClosing.
size_t EncodeError(uint16_t opcode, uint64_t id, Code code, std::string_view message, bool closing,
                   uint8_t* out, size_t cap) noexcept;

// Decoders read one frame's payload; trailing bytes are kMalformed unless the
// frame declares a newer minor version than ours (minors only append fields).
Code DecodeHelloRequest(const Frame& f, const Limits& limits, HelloRequest* out) noexcept;
Code DecodeHelloResponse(const Frame& f, const Limits& limits, HelloResponse* out) noexcept;
// Keys are written to keys[0, key_cap) and fields to fields[0, field_cap);
// kTooMany if the request has more than the buffers or the limits allow.
Code DecodeScoreRequest(const Frame& f, const Limits& limits, Key* keys, size_t key_cap,
                        double* fields, size_t field_cap, ScoreRequest* out) noexcept;
Code DecodeScoreResponse(const Frame& f, ScoreResponse* out) noexcept;
Code DecodePredictRequest(const Frame& f, const Limits& limits, PredictRequest* out) noexcept;
Code DecodePredictResponse(const Frame& f, PredictResponse* out) noexcept;
// Batch requests write their keys row-major to keys[0, key_cap); kTooMany
// when they need more, or when a count exceeds limits.max_rows / max_keys /
// max_fields. kBadKeyKind for a key column of an unknown kind.
Code DecodeScoreBatchRequest(const Frame& f, const Limits& limits, Key* keys, size_t key_cap,
                             ScoreBatchRequest* out) noexcept;
Code DecodeScoreBatchResponse(const Frame& f, ScoreBatchResponse* out) noexcept;
Code DecodeGetFeaturesRequest(const Frame& f, const Limits& limits, Key* keys, size_t key_cap,
                              GetFeaturesRequest* out) noexcept;
// kMalformed for a found byte other than 0 or 1.
Code DecodeGetFeaturesResponse(const Frame& f, GetFeaturesResponse* out) noexcept;
Code DecodePutFeaturesRequest(const Frame& f, const Limits& limits, Key* keys, size_t key_cap,
                              PutFeaturesRequest* out) noexcept;
Code DecodePutFeaturesResponse(const Frame& f, PutFeaturesResponse* out) noexcept;
Code DecodeIngestRequest(const Frame& f, const Limits& limits, Key* keys, size_t key_cap,
                         IngestRequest* out) noexcept;
Code DecodeIngestResponse(const Frame& f, IngestResponse* out) noexcept;
Code DecodeStatsRequest(const Frame& f, const Limits& limits, std::string_view* name) noexcept;
Code DecodeStatsResponse(const Frame& f, std::string_view* json) noexcept;
// kBadValue for an unknown source byte; path at most kMaxPathBytes.
Code DecodeModelLoadRequest(const Frame& f, const Limits& limits, ModelLoadRequest* out) noexcept;
Code DecodeModelLoadResponse(const Frame& f, const Limits& limits, std::string_view* version) noexcept;
// kBadValue for an unknown role byte.
Code DecodeModelSwapRequest(const Frame& f, const Limits& limits, ModelSwapRequest* out) noexcept;
Code DecodeModelSwapResponse(const Frame& f, const Limits& limits, std::string_view* previous) noexcept;
// Response decoders expect header status kOk; for any other status they
// return it untouched and DecodeError reads the message.
// Error response: *code is the header's status, *message its text.
Code DecodeError(const Frame& f, Code* code, std::string_view* message) noexcept;

// Copies n little-endian values from unaligned wire bytes.
inline void CopyF64(const void* src, size_t n, double* out) noexcept {
  if (n != 0) std::memcpy(out, src, n * sizeof(double));
}
inline void CopyI64(const void* src, size_t n, int64_t* out) noexcept {
  if (n != 0) std::memcpy(out, src, n * sizeof(int64_t));
}
inline void CopyF32(const void* src, size_t n, float* out) noexcept {
  if (n != 0) std::memcpy(out, src, n * sizeof(float));
}

}  // namespace rtml::wire

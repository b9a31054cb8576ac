// Wire codec tests: round trips of every message, every prefix and every
// single-byte corruption of valid frames, lying lengths, limits, and a
// fixed-seed mutation fuzz loop. Inputs are copied into exactly-sized heap
// buffers so that ASan turns any over-read into a failure.
#include "rtml/wire.h"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "check.h"

using namespace rtml;
using namespace rtml::wire;

namespace {

using Bytes = std::vector<uint8_t>;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kFuzzIterations = 20000;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr int kFuzzIterations = 20000;
#else
constexpr int kFuzzIterations = 200000;
#endif
#else
constexpr int kFuzzIterations = 200000;
#endif

// Encodes with the size query the API documents: first with no room, then
// with exactly the size it asked for.
template <typename Fn>
Bytes Encode(Fn fn) {
  const size_t n = fn(nullptr, 0);
  Bytes out(n);
  if (n == 0) return out;
  const size_t again = fn(out.data(), out.size());
  CHECK(again == n);
  return out;
}

Frame Split(const Bytes& b) {
  Frame f;
  Code err = Code::kOk;
  FrameSplitter s(b.data(), b.size(), Limits{});
  CHECK(s.Next(&f, &err) == SplitResult::kFrame);
  CHECK(s.consumed() == b.size());
  return f;
}

const Key kKeys[] = {Key::Int(-42), Key::Str("card-123"), Key::Str(""), Key::Int(INT64_MAX)};
const double kFields[] = {1.5, -0.0, 1e300, std::nan(""), -7.25};
const float kRowsF32[] = {1.f, 2.f, 3.f, 4.f, 5.f, 6.f};
const double kRowsF64[] = {0.1, 0.2, 0.3, 0.4};
const double kOutputs[] = {0.25, 0.75};
// Batches: 3 rows of (int key, str key) and 2 fields; columns of one kind.
const Key kBatchKeys[] = {Key::Int(1), Key::Str("a"), Key::Int(-2), Key::Str(""), Key::Int(3), Key::Str("ccc")};
const double kBatchFields[] = {1, 2, 3, 4, 5, std::nan("")};
const Key kStrKeys[] = {Key::Str("u1"), Key::Str("user-22")};
const Key kIntKeys[] = {Key::Int(7), Key::Int(-8), Key::Int(INT64_MIN)};
const int64_t kEventNs[] = {1000, 0, -3000};
const uint8_t kRowStatus[] = {0, kRowStale, static_cast<uint8_t>(Code::kTableFull)};
const uint8_t kFound[] = {1, 0};
const uint8_t kModelBytes[] = {'R', 'T', 'M', 'F', 0, 1, 2};
const double kGetValues[] = {0.5, 1.5, 2.5, std::nan(""), std::nan(""), std::nan("")};

// SCORE_BATCH, GET_FEATURES, PUT_FEATURES and INGEST frames, in that order:
// request, response; then the empty (zero-row) requests.
std::vector<Bytes> BatchFrames() {
  std::vector<Bytes> v;
  ScoreBatchRequest sb;
  sb.scorer = "fraud";
  sb.now_ns = -5;
  sb.n_rows = 3;
  sb.n_keys = 2;
  sb.n_fields = 2;
  sb.keys = kBatchKeys;
  sb.fields = kBatchFields;
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodeScoreBatchRequest(10, sb, o, c); }));
  ScoreBatchResponse sbr;
  sbr.n_rows = 3;
  sbr.n_outputs = 2;
  sbr.outputs = kBatchFields;
  sbr.status = kRowStatus;
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodeScoreBatchResponse(10, sbr, o, c); }));
  GetFeaturesRequest g;
  g.table = "users";
  g.now_ns = 123456789;
  g.n_keys = 2;
  g.keys = kStrKeys;
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodeGetFeaturesRequest(11, g, o, c); }));
  GetFeaturesResponse gr;
  gr.n_keys = 2;
  gr.n_fields = 3;
  gr.found = kFound;
  gr.event_ns = kEventNs;
  gr.values = kGetValues;
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodeGetFeaturesResponse(11, gr, o, c); }));
  PutFeaturesRequest p;
  p.table = "cards";
  p.n_rows = 3;
  p.n_fields = 2;
  p.keys = kIntKeys;
  p.event_ns = kEventNs;
  p.values = kBatchFields;
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodePutFeaturesRequest(12, p, o, c); }));
  PutFeaturesResponse pr;
  pr.n_rows = 3;
  pr.status = kRowStatus;
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodePutFeaturesResponse(12, pr, o, c); }));
  IngestRequest in;
  in.window_set = "spend";
  in.n_events = 2;
  in.keys = kStrKeys;
  in.event_ns = kEventNs;
  in.values = kBatchFields;
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodeIngestRequest(13, in, o, c); }));
  IngestResponse ir;
  ir.accepted = 5;
  ir.dropped = 2;
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodeIngestResponse(13, ir, o, c); }));
  sb.n_rows = 0;
  sb.keys = nullptr;
  sb.fields = nullptr;
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodeScoreBatchRequest(14, sb, o, c); }));
  in.n_events = 0;
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodeIngestRequest(15, in, o, c); }));
  return v;
}

// STATS, MODEL_LOAD (path, inline) and MODEL_SWAP frames: request, response.
std::vector<Bytes> AdminFrames() {
  std::vector<Bytes> v;
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodeStatsRequest(20, "fraud", o, c); }));
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodeStatsResponse(20, "{\"rows\": 3}", o, c); }));
  ModelLoadRequest ml;
  ml.name = "gbm";
  ml.path = "/models/gbm.rtml";
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodeModelLoadRequest(21, ml, o, c); }));
  ml.source = ModelSource::kInline;
  ml.data = kModelBytes;
  ml.size = sizeof(kModelBytes);
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodeModelLoadRequest(22, ml, o, c); }));
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodeModelLoadResponse(22, "v-abc123", o, c); }));
  ModelSwapRequest ms;
  ms.scorer = "fraud";
  ms.model = "gbm";
  ms.role = ModelRole::kShadow;
  ms.arm = "b";
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodeModelSwapRequest(23, ms, o, c); }));
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodeModelSwapResponse(23, "v-old", o, c); }));
  return v;
}

// One valid frame of every message the codec implements.
std::vector<Bytes> ValidFrames() {
  std::vector<Bytes> v;
  HelloRequest hello;
  hello.token = "s3cret";
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodeHelloRequest(1, hello, o, c); }));
  HelloResponse hr;
  hr.max_payload = 1 << 20;
  hr.max_in_flight = 128;
  hr.server = "rtml/test";
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodeHelloResponse(1, hr, o, c); }));
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodePing(2, 0, "abc", o, c); }));
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodePing(2, kFlagResponse, "abc", o, c); }));
  ScoreRequest sr;
  sr.scorer = "fraud";
  sr.keys = kKeys;
  sr.n_keys = 4;
  sr.fields = kFields;
  sr.n_fields = 5;
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodeScoreRequest(3, sr, o, c); }));
  ScoreResponse so;
  so.outputs = kOutputs;
  so.n_outputs = 2;
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodeScoreResponse(3, so, o, c); }));
  PredictRequest pr;
  pr.model = "m";
  pr.dtype = DType::kFloat32;
  pr.n_rows = 2;
  pr.n_cols = 3;
  pr.data = kRowsF32;
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodePredictRequest(4, pr, o, c); }));
  pr.dtype = DType::kFloat64;
  pr.n_rows = 2;
  pr.n_cols = 2;
  pr.data = kRowsF64;
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodePredictRequest(5, pr, o, c); }));
  PredictResponse po;
  po.n_rows = 1;
  po.n_outputs = 2;
  po.values = kOutputs;
  v.push_back(Encode([&](uint8_t* o, size_t c) { return EncodePredictResponse(5, po, o, c); }));
  v.push_back(Encode([&](uint8_t* o, size_t c) {
    return EncodeError(static_cast<uint16_t>(Opcode::kScore), 6, Code::kNotFound, "scorer 'x' not found", false, o,
                       c);
  }));
  for (Bytes& b : BatchFrames()) v.push_back(std::move(b));
  for (Bytes& b : AdminFrames()) v.push_back(std::move(b));
  return v;
}

// Decodes with decode(&m) and, on success, re-encodes m with encode(m, out, cap).
template <typename M, typename Dec, typename Enc>
Code ReEncode(Dec decode, Enc encode, Bytes* again) {
  M m;
  const Code c = decode(&m);
  if (c == Code::kOk) *again = Encode([&](uint8_t* o, size_t n) { return encode(m, o, n); });
  return c;
}

// The requests of DecodeAny's batch and admin opcodes.
Code DecodeBatchOrAdminRequest(const Frame& f, Bytes* again) {
  const Limits lim;
  const uint64_t id = f.header.request_id;
  Key keys[256];
  switch (static_cast<Opcode>(f.header.opcode)) {
    case Opcode::kScoreBatch:
      return ReEncode<ScoreBatchRequest>(
          [&](ScoreBatchRequest* m) { return DecodeScoreBatchRequest(f, lim, keys, 256, m); },
          [&](const ScoreBatchRequest& m, uint8_t* o, size_t n) { return EncodeScoreBatchRequest(id, m, o, n); },
          again);
    case Opcode::kGetFeatures:
      return ReEncode<GetFeaturesRequest>(
          [&](GetFeaturesRequest* m) { return DecodeGetFeaturesRequest(f, lim, keys, 256, m); },
          [&](const GetFeaturesRequest& m, uint8_t* o, size_t n) { return EncodeGetFeaturesRequest(id, m, o, n); },
          again);
    case Opcode::kPutFeatures:
      return ReEncode<PutFeaturesRequest>(
          [&](PutFeaturesRequest* m) { return DecodePutFeaturesRequest(f, lim, keys, 256, m); },
          [&](const PutFeaturesRequest& m, uint8_t* o, size_t n) { return EncodePutFeaturesRequest(id, m, o, n); },
          again);
    case Opcode::kIngest:
      return ReEncode<IngestRequest>(
          [&](IngestRequest* m) { return DecodeIngestRequest(f, lim, keys, 256, m); },
          [&](const IngestRequest& m, uint8_t* o, size_t n) { return EncodeIngestRequest(id, m, o, n); }, again);
    case Opcode::kStats:
      return ReEncode<std::string_view>(
          [&](std::string_view* m) { return DecodeStatsRequest(f, lim, m); },
          [&](std::string_view m, uint8_t* o, size_t n) { return EncodeStatsRequest(id, m, o, n); }, again);
    case Opcode::kModelLoad:
      return ReEncode<ModelLoadRequest>(
          [&](ModelLoadRequest* m) { return DecodeModelLoadRequest(f, lim, m); },
          [&](const ModelLoadRequest& m, uint8_t* o, size_t n) { return EncodeModelLoadRequest(id, m, o, n); }, again);
    case Opcode::kModelSwap:
      return ReEncode<ModelSwapRequest>(
          [&](ModelSwapRequest* m) { return DecodeModelSwapRequest(f, lim, m); },
          [&](const ModelSwapRequest& m, uint8_t* o, size_t n) { return EncodeModelSwapRequest(id, m, o, n); }, again);
    default:
      return Code::kUnsupported;  // known opcode without a codec yet
  }
}

// The responses of DecodeAny's batch and admin opcodes; typed arrays are
// copied out of the wire bytes first, as a client would.
Code DecodeBatchOrAdminResponse(const Frame& f, Bytes* again) {
  const Limits lim;
  const uint64_t id = f.header.request_id;
  std::vector<double> values;
  std::vector<int64_t> event_ns;
  switch (static_cast<Opcode>(f.header.opcode)) {
    case Opcode::kScoreBatch:
      return ReEncode<ScoreBatchResponse>(
          [&](ScoreBatchResponse* m) { return DecodeScoreBatchResponse(f, m); },
          [&](ScoreBatchResponse m, uint8_t* o, size_t n) {
            values.resize(size_t{m.n_rows} * m.n_outputs);
            CopyF64(m.raw, values.size(), values.data());
            m.outputs = values.data();
            return EncodeScoreBatchResponse(id, m, o, n);
          },
          again);
    case Opcode::kGetFeatures:
      return ReEncode<GetFeaturesResponse>(
          [&](GetFeaturesResponse* m) { return DecodeGetFeaturesResponse(f, m); },
          [&](GetFeaturesResponse m, uint8_t* o, size_t n) {
            values.resize(size_t{m.n_keys} * m.n_fields);
            event_ns.resize(m.n_keys);
            CopyF64(m.raw_values, values.size(), values.data());
            CopyI64(m.raw_event_ns, event_ns.size(), event_ns.data());
            m.values = values.data();
            m.event_ns = event_ns.data();
            return EncodeGetFeaturesResponse(id, m, o, n);
          },
          again);
    case Opcode::kPutFeatures:
      return ReEncode<PutFeaturesResponse>(
          [&](PutFeaturesResponse* m) { return DecodePutFeaturesResponse(f, m); },
          [&](const PutFeaturesResponse& m, uint8_t* o, size_t n) { return EncodePutFeaturesResponse(id, m, o, n); },
          again);
    case Opcode::kIngest:
      return ReEncode<IngestResponse>(
          [&](IngestResponse* m) { return DecodeIngestResponse(f, m); },
          [&](const IngestResponse& m, uint8_t* o, size_t n) { return EncodeIngestResponse(id, m, o, n); }, again);
    case Opcode::kStats:
      return ReEncode<std::string_view>(
          [&](std::string_view* m) { return DecodeStatsResponse(f, m); },
          [&](std::string_view m, uint8_t* o, size_t n) { return EncodeStatsResponse(id, m, o, n); }, again);
    case Opcode::kModelLoad:
      return ReEncode<std::string_view>(
          [&](std::string_view* m) { return DecodeModelLoadResponse(f, lim, m); },
          [&](std::string_view m, uint8_t* o, size_t n) { return EncodeModelLoadResponse(id, m, o, n); }, again);
    case Opcode::kModelSwap:
      return ReEncode<std::string_view>(
          [&](std::string_view* m) { return DecodeModelSwapResponse(f, lim, m); },
          [&](std::string_view m, uint8_t* o, size_t n) { return EncodeModelSwapResponse(id, m, o, n); }, again);
    default:
      return Code::kUnsupported;
  }
}

// Decodes a frame as a receiver would (request or response by the flag) and,
// on success, re-encodes what it read. Returns the decode result; *again is
// the re-encoding (empty when decoding failed).
Code DecodeAny(const Frame& f, Bytes* again) {
  again->clear();
  const Limits lim;
  const Header& h = f.header;
  const uint64_t id = h.request_id;
  const bool response = (h.flags & kFlagResponse) != 0;
  if (response && h.status != 0) {
    Code code;
    std::string_view msg;
    const Code c = DecodeError(f, &code, &msg);
    if (c != Code::kOk) return c;
    const bool closing = (h.flags & kFlagClosing) != 0;
    if ((h.flags & ~kKnownFlags) != 0) return Code::kBadFlags;
    *again = Encode([&](uint8_t* o, size_t n) { return EncodeError(h.opcode, id, code, msg, closing, o, n); });
    return Code::kOk;
  }
  if (response) {
    if (h.flags != kFlagResponse) return Code::kBadFlags;
  } else {
    const Code c = CheckRequestHeader(h);
    if (c != Code::kOk) return c;
  }
  switch (static_cast<Opcode>(h.opcode)) {
    case Opcode::kHello: {
      if (response) {
        HelloResponse m;
        const Code c = DecodeHelloResponse(f, lim, &m);
        if (c == Code::kOk) *again = Encode([&](uint8_t* o, size_t n) { return EncodeHelloResponse(id, m, o, n); });
        return c;
      }
      HelloRequest m;
      const Code c = DecodeHelloRequest(f, lim, &m);
      if (c == Code::kOk) *again = Encode([&](uint8_t* o, size_t n) { return EncodeHelloRequest(id, m, o, n); });
      return c;
    }
    case Opcode::kPing: {
      std::string_view echo(reinterpret_cast<const char*>(f.payload), h.payload_len);
      *again = Encode([&](uint8_t* o, size_t n) { return EncodePing(id, h.flags, echo, o, n); });
      return Code::kOk;
    }
    case Opcode::kScore: {
      if (response) {
        ScoreResponse m;
        const Code c = DecodeScoreResponse(f, &m);
        if (c != Code::kOk) return c;
        std::vector<double> out(m.n_outputs);
        CopyF64(m.raw, m.n_outputs, out.data());
        m.outputs = out.data();
        *again = Encode([&](uint8_t* o, size_t n) { return EncodeScoreResponse(id, m, o, n); });
        return c;
      }
      Key keys[64];
      double fields[64];
      ScoreRequest m;
      const Code c = DecodeScoreRequest(f, lim, keys, 64, fields, 64, &m);
      if (c == Code::kOk) *again = Encode([&](uint8_t* o, size_t n) { return EncodeScoreRequest(id, m, o, n); });
      return c;
    }
    case Opcode::kPredict: {
      if (response) {
        PredictResponse m;
        const Code c = DecodePredictResponse(f, &m);
        if (c != Code::kOk) return c;
        std::vector<double> out(size_t{m.n_rows} * m.n_outputs);
        CopyF64(m.raw, out.size(), out.data());
        m.values = out.data();
        *again = Encode([&](uint8_t* o, size_t n) { return EncodePredictResponse(id, m, o, n); });
        return c;
      }
      PredictRequest m;
      const Code c = DecodePredictRequest(f, lim, &m);
      if (c == Code::kOk) *again = Encode([&](uint8_t* o, size_t n) { return EncodePredictRequest(id, m, o, n); });
      return c;
    }
    default:
      return response ? DecodeBatchOrAdminResponse(f, again) : DecodeBatchOrAdminRequest(f, again);
  }
}

// Splits and decodes a whole buffer (held in an exactly-sized heap copy) and
// checks the properties every input must have: the splitter stays inside the
// buffer and makes progress, and a frame that decodes successfully in our own
// minor version re-encodes to exactly its bytes (so a corruption can only
// yield an error or a different valid frame, never a misread).
void CheckStream(const uint8_t* data, size_t n, int* frames_ok = nullptr) {
  const Bytes buf(data, data + n);
  FrameSplitter s(buf.data(), buf.size(), Limits{});
  for (;;) {
    const size_t before = s.consumed();
    Frame f;
    Code err = Code::kOk;
    const SplitResult r = s.Next(&f, &err);
    CHECK(s.consumed() <= buf.size());
    if (r != SplitResult::kFrame) {
      if (r == SplitResult::kFatal) CHECK(IsFatal(err));
      CHECK(s.consumed() == before);
      return;
    }
    CHECK(s.consumed() == before + f.size);
    Bytes again;
    const Code c = DecodeAny(f, &again);
    if (c == Code::kOk && f.header.minor == kVersionMinor) {
      const bool same = again.size() == f.size && std::memcmp(again.data(), buf.data() + before, f.size) == 0;
      CHECK(same);
      if (!same) {  // show which bytes the re-encoding changed
        for (size_t i = 0; i < f.size; ++i) {
          std::printf("%02x%s", buf[before + i], i < again.size() && again[i] != buf[before + i] ? "*" : " ");
        }
        std::printf("\n");
      }
      if (frames_ok != nullptr) ++*frames_ok;
    }
    if (c != Code::kOk) CHECK(CodeName(static_cast<uint16_t>(c)) != nullptr);
  }
}

struct Rng {
  uint64_t s;
  uint64_t Next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  size_t Below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(Next() % n); }
};

}  // namespace

RTML_TEST(NamesCoverEveryCode) {
  CHECK(std::string(OpcodeName(0x0010)) == "SCORE");
  CHECK(std::string(OpcodeName(static_cast<uint16_t>(Opcode::kModelSwap))) == "MODEL_SWAP");
  CHECK(OpcodeName(kOpcodeNone) == nullptr);
  CHECK(OpcodeName(0x0100) == nullptr);
  CHECK(std::string(CodeName(0)) == "OK");
  CHECK(std::string(CodeName(static_cast<uint16_t>(Code::kFrameTooLarge))) == "FRAME_TOO_LARGE");
  CHECK(CodeName(255) == nullptr);
  CHECK(IsFatal(Code::kBadMagic) && !IsFatal(Code::kUnknownOpcode) && !IsFatal(Code::kOk));
}

RTML_TEST(HeaderRoundTrip) {
  Header h;
  h.opcode = 0x1234;
  h.flags = kFlagResponse;
  h.status = 77;
  h.request_id = 0x0102030405060708ULL;
  h.payload_len = 99;
  uint8_t b[kHeaderSize];
  WriteHeader(h, b);
  CHECK(std::memcmp(b, "RTML", 4) == 0);
  CHECK(b[12] == 0x08 && b[19] == 0x01);  // little-endian request id
  Header g;
  CHECK(ParseHeader(b, kHeaderSize, Limits{}, &g) == Code::kOk);
  CHECK(g.opcode == h.opcode && g.flags == h.flags && g.status == h.status && g.request_id == h.request_id &&
        g.payload_len == 99 && g.major == kVersionMajor && g.minor == kVersionMinor);
  CHECK(ParseHeader(b, kHeaderSize - 1, Limits{}, &g) == Code::kMalformed);
}

// The example bytes in docs/protocol.md.
RTML_TEST(DocumentedPingBytes) {
  const Bytes req = Encode([](uint8_t* o, size_t c) { return EncodePing(7, 0, "hi", o, c); });
  const Bytes want = {0x52, 0x54, 0x4d, 0x4c, 1, 0, 2, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0x68, 0x69};
  CHECK(req == want);
  const Bytes resp = Encode([](uint8_t* o, size_t c) { return EncodePing(7, kFlagResponse, "hi", o, c); });
  CHECK(resp.size() == want.size() && resp[8] == 1);
}

RTML_TEST(MessagesRoundTrip) {
  const auto frames = ValidFrames();
  for (const Bytes& b : frames) {
    const Frame f = Split(b);
    Bytes again;
    CHECK(DecodeAny(f, &again) == Code::kOk);
    CHECK(again == b);
  }
  // Field-level checks beyond byte equality.
  {
    const Frame f = Split(frames[0]);
    HelloRequest m;
    CHECK(DecodeHelloRequest(f, Limits{}, &m) == Code::kOk);
    CHECK(m.token == "s3cret" && m.major == kVersionMajor);
  }
  {
    const Frame f = Split(frames[4]);
    CHECK(f.header.request_id == 3 && f.header.opcode == static_cast<uint16_t>(Opcode::kScore));
    Key keys[4];
    double fields[5];
    ScoreRequest m;
    CHECK(DecodeScoreRequest(f, Limits{}, keys, 4, fields, 5, &m) == Code::kOk);
    CHECK(m.scorer == "fraud" && m.n_keys == 4 && m.n_fields == 5);
    CHECK(!keys[0].is_string && keys[0].i == -42 && keys[1].is_string && keys[1].s == "card-123");
    CHECK(keys[2].is_string && keys[2].s.empty() && keys[3].i == INT64_MAX);
    CHECK(fields[0] == 1.5 && std::signbit(fields[1]) && fields[2] == 1e300 && std::isnan(fields[3]));
    // Buffers smaller than the request: kTooMany, never an overflow.
    CHECK(DecodeScoreRequest(f, Limits{}, keys, 3, fields, 5, &m) == Code::kTooMany);
    CHECK(DecodeScoreRequest(f, Limits{}, keys, 4, fields, 4, &m) == Code::kTooMany);
    Limits tight;
    tight.max_key_bytes = 4;
    CHECK(DecodeScoreRequest(f, tight, keys, 4, fields, 5, &m) == Code::kStringTooLong);
  }
  {
    const Frame f = Split(frames[6]);
    PredictRequest m;
    CHECK(DecodePredictRequest(f, Limits{}, &m) == Code::kOk);
    CHECK(m.dtype == DType::kFloat32 && m.n_rows == 2 && m.n_cols == 3 && m.model == "m");
    float rows[6];
    CopyF32(m.data, 6, rows);
    CHECK(std::memcmp(rows, kRowsF32, sizeof(rows)) == 0);
  }
  {
    const Frame f = Split(frames[9]);
    Code code;
    std::string_view msg;
    CHECK(DecodeError(f, &code, &msg) == Code::kOk);
    CHECK(code == Code::kNotFound && msg == "scorer 'x' not found" && f.header.request_id == 6);
    ScoreResponse r;
    CHECK(DecodeScoreResponse(f, &r) == Code::kNotFound);  // an error, not a score
  }
}

RTML_TEST(ErrorMessageIsCutAndClosingIsFlagged) {
  const std::string long_msg(10000, 'x');
  const Bytes b = Encode([&](uint8_t* o, size_t c) {
    return EncodeError(kOpcodeNone, 0, Code::kBadMagic, long_msg, true, o, c);
  });
  const Frame f = Split(b);
  CHECK(f.header.flags == (kFlagResponse | kFlagClosing));
  Code code;
  std::string_view msg;
  CHECK(DecodeError(f, &code, &msg) == Code::kOk);
  CHECK(code == Code::kBadMagic && msg.size() == kMaxMessageBytes);
}

RTML_TEST(EncodeIntoSmallBufferNeverWritesPastIt) {
  const Bytes full = ValidFrames()[4];
  for (size_t cap = 0; cap < full.size(); ++cap) {
    Bytes small(cap);
    ScoreRequest sr;
    sr.scorer = "fraud";
    sr.keys = kKeys;
    sr.n_keys = 4;
    sr.fields = kFields;
    sr.n_fields = 5;
    CHECK(EncodeScoreRequest(3, sr, small.data(), cap) == full.size());
  }
  // Strings over u16: no frame at all.
  const std::string huge(70000, 'k');
  const Key k = Key::Str(huge);
  ScoreRequest sr;
  sr.scorer = "s";
  sr.keys = &k;
  sr.n_keys = 1;
  CHECK(EncodeScoreRequest(1, sr, nullptr, 0) == 0);
}

RTML_TEST(EveryPrefixNeedsMore) {
  for (const Bytes& b : ValidFrames()) {
    for (size_t n = 0; n < b.size(); ++n) {
      const Bytes prefix(b.begin(), b.begin() + n);
      Frame f;
      Code err = Code::kOk;
      FrameSplitter s(prefix.data(), prefix.size(), Limits{});
      CHECK(s.Next(&f, &err) == SplitResult::kNeedMore);
      CHECK(s.consumed() == 0);
    }
  }
  // Two frames back to back: the first comes out whole, then "need more".
  const auto frames = ValidFrames();
  Bytes two = frames[4];
  two.insert(two.end(), frames[6].begin(), frames[6].end());
  for (size_t n = frames[4].size(); n < two.size(); ++n) {
    const Bytes prefix(two.begin(), two.begin() + n);
    FrameSplitter s(prefix.data(), prefix.size(), Limits{});
    Frame f;
    Code err;
    CHECK(s.Next(&f, &err) == SplitResult::kFrame);
    CHECK(s.Next(&f, &err) == SplitResult::kNeedMore);
    CHECK(s.consumed() == frames[4].size());
  }
}

RTML_TEST(EverySingleByteCorruptionIsSafe) {
  int still_valid = 0;
  for (const Bytes& b : ValidFrames()) {
    for (size_t i = 0; i < b.size(); ++i) {
      for (int v = 0; v < 256; ++v) {
        if (v == b[i]) continue;
        Bytes c = b;
        c[i] = static_cast<uint8_t>(v);
        CheckStream(c.data(), c.size(), &still_valid);
      }
    }
  }
  CHECK(still_valid > 0);  // e.g. a changed request id or field value
}

RTML_TEST(FatalHeaders) {
  Frame f;
  Code err = Code::kOk;
  const char http[] = "GET / HTTP/1.1\r\n";
  FrameSplitter s1(reinterpret_cast<const uint8_t*>(http), 1, Limits{});  // fails on its first byte
  CHECK(s1.Next(&f, &err) == SplitResult::kFatal && err == Code::kBadMagic);

  Bytes b = ValidFrames()[2];
  b[4] = kVersionMajor + 1;
  FrameSplitter s2(b.data(), 5, Limits{});
  CHECK(s2.Next(&f, &err) == SplitResult::kFatal && err == Code::kUnsupportedVersion);

  // A length above the limit is fatal as soon as the header is in, before
  // any payload arrives.
  Header h;
  h.opcode = static_cast<uint16_t>(Opcode::kPing);
  Limits lim;
  lim.max_payload = 1000;
  h.payload_len = 1001;
  uint8_t hb[kHeaderSize];
  WriteHeader(h, hb);
  FrameSplitter s3(hb, kHeaderSize, lim);
  CHECK(s3.Next(&f, &err) == SplitResult::kFatal && err == Code::kFrameTooLarge);
  h.payload_len = 0xFFFFFFFF;
  WriteHeader(h, hb);
  FrameSplitter s4(hb, kHeaderSize, Limits{});
  CHECK(s4.Next(&f, &err) == SplitResult::kFatal && err == Code::kFrameTooLarge);
  // Within the limit, a length longer than the data is just "need more".
  h.payload_len = 1000;
  WriteHeader(h, hb);
  FrameSplitter s5(hb, kHeaderSize, lim);
  CHECK(s5.Next(&f, &err) == SplitResult::kNeedMore);
}

RTML_TEST(UnknownOpcodeAndFlagsAreFrameErrors) {
  Header h;
  h.opcode = 0x0150;  // reserved for online learning
  h.request_id = 9;
  uint8_t hb[kHeaderSize];
  WriteHeader(h, hb);
  Bytes stream(hb, hb + kHeaderSize);
  const Bytes ping = ValidFrames()[2];
  stream.insert(stream.end(), ping.begin(), ping.end());
  FrameSplitter s(stream.data(), stream.size(), Limits{});
  Frame f;
  Code err;
  CHECK(s.Next(&f, &err) == SplitResult::kFrame);
  CHECK(CheckRequestHeader(f.header) == Code::kUnknownOpcode && f.header.request_id == 9);
  CHECK(s.Next(&f, &err) == SplitResult::kFrame);  // the stream stays in sync
  CHECK(CheckRequestHeader(f.header) == Code::kOk);
  f.header.flags = 0x8000;
  CHECK(CheckRequestHeader(f.header) == Code::kBadFlags);
  f.header.flags = kFlagResponse;
  CHECK(CheckRequestHeader(f.header) == Code::kBadFlags);
}

RTML_TEST(LyingInnerLengths) {
  auto frame_with = [](Opcode op, const Bytes& payload) {
    Header h;
    h.opcode = static_cast<uint16_t>(op);
    h.payload_len = static_cast<uint32_t>(payload.size());
    Bytes b(kHeaderSize);
    WriteHeader(h, b.data());
    b.insert(b.end(), payload.begin(), payload.end());
    return b;
  };
  Key keys[8];
  double fields[8];
  ScoreRequest sr;
  // scorer name claims 0xFFFF bytes, 2 follow
  Bytes b = frame_with(Opcode::kScore, {0xFF, 0xFF, 'a', 'b'});
  CHECK(DecodeScoreRequest(Split(b), Limits{}, keys, 8, fields, 8, &sr) == Code::kMalformed);
  // n_fields claims 3, 2 follow
  Bytes p = {1, 0, 's', /*now_ns*/ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0};
  p.resize(p.size() + 16, 0);
  CHECK(DecodeScoreRequest(Split(frame_with(Opcode::kScore, p)), Limits{}, keys, 8, fields, 8, &sr) ==
        Code::kMalformed);
  // n_fields claims 2^32 - 1: refused by the limit before anything is read
  Bytes q = {1, 0, 's', /*now_ns*/ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF};
  CHECK(DecodeScoreRequest(Split(frame_with(Opcode::kScore, q)), Limits{}, keys, 8, fields, 8, &sr) ==
        Code::kTooMany);
  // unknown key kind
  Bytes k = {1, 0, 's', /*now_ns*/ 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 7};
  CHECK(DecodeScoreRequest(Split(frame_with(Opcode::kScore, k)), Limits{}, keys, 8, fields, 8, &sr) ==
        Code::kBadKeyKind);
  // PREDICT claiming (2^32-1)^2 float64 values in a few bytes
  PredictRequest pr;
  Bytes m = {1, 0, 'm', 1, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3};
  CHECK(DecodePredictRequest(Split(frame_with(Opcode::kPredict, m)), Limits{}, &pr) == Code::kMalformed);
  // zero-width rows
  Bytes z = {1, 0, 'm', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0};
  CHECK(DecodePredictRequest(Split(frame_with(Opcode::kPredict, z)), Limits{}, &pr) == Code::kBadShape);
  // unknown dtype
  Bytes d = {1, 0, 'm', 9, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  CHECK(DecodePredictRequest(Split(frame_with(Opcode::kPredict, d)), Limits{}, &pr) == Code::kBadDType);
  // trailing bytes in our own minor version
  Bytes t = {1, 0, 's', /*now_ns*/ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xAA};
  CHECK(DecodeScoreRequest(Split(frame_with(Opcode::kScore, t)), Limits{}, keys, 8, fields, 8, &sr) ==
        Code::kMalformed);
  // ... tolerated from a newer minor (appended fields)
  Bytes newer = frame_with(Opcode::kScore, t);
  newer[5] = kVersionMinor + 1;
  CHECK(DecodeScoreRequest(Split(newer), Limits{}, keys, 8, fields, 8, &sr) == Code::kOk);
}

RTML_TEST(BatchMessagesDecodeTheirFields) {
  const auto v = BatchFrames();
  Key keys[8];
  {
    ScoreBatchRequest m;
    CHECK(DecodeScoreBatchRequest(Split(v[0]), Limits{}, keys, 8, &m) == Code::kOk);
    CHECK(m.scorer == "fraud" && m.now_ns == -5 && m.n_rows == 3 && m.n_keys == 2 && m.n_fields == 2 &&
          m.keys == keys);
    for (size_t i = 0; i < 6; ++i) {  // row-major, as ScoreMany takes them
      CHECK(keys[i].is_string == kBatchKeys[i].is_string && keys[i].i == kBatchKeys[i].i &&
            keys[i].s == kBatchKeys[i].s);
    }
    double fields[6];
    CopyF64(m.fields, 6, fields);
    CHECK(fields[0] == 1 && fields[4] == 5 && std::isnan(fields[5]));
    CHECK(DecodeScoreBatchRequest(Split(v[0]), Limits{}, keys, 5, &m) == Code::kTooMany);
  }
  {
    ScoreBatchResponse m;
    CHECK(DecodeScoreBatchResponse(Split(v[1]), &m) == Code::kOk);
    CHECK(m.n_rows == 3 && m.n_outputs == 2 && m.status[1] == kRowStale && m.status[2] == 128);
    double out[6];
    CopyF64(m.raw, 6, out);
    CHECK(out[3] == 4 && std::isnan(out[5]));
  }
  {
    GetFeaturesRequest m;
    CHECK(DecodeGetFeaturesRequest(Split(v[2]), Limits{}, keys, 8, &m) == Code::kOk);
    CHECK(m.table == "users" && m.now_ns == 123456789 && m.n_keys == 2 && keys[1].s == "user-22");
    GetFeaturesResponse r;
    CHECK(DecodeGetFeaturesResponse(Split(v[3]), &r) == Code::kOk);
    CHECK(r.n_keys == 2 && r.n_fields == 3 && r.found[0] == 1 && r.found[1] == 0);
    int64_t ev[2];
    double vals[6];
    CopyI64(r.raw_event_ns, 2, ev);
    CopyF64(r.raw_values, 6, vals);
    CHECK(ev[0] == 1000 && ev[1] == 0 && vals[2] == 2.5 && std::isnan(vals[3]));
  }
  {
    PutFeaturesRequest m;
    CHECK(DecodePutFeaturesRequest(Split(v[4]), Limits{}, keys, 8, &m) == Code::kOk);
    CHECK(m.table == "cards" && m.n_rows == 3 && m.n_fields == 2 && keys[2].i == INT64_MIN);
    int64_t ev[3];
    CopyI64(m.event_ns, 3, ev);
    CHECK(ev[2] == -3000);
    PutFeaturesResponse r;
    CHECK(DecodePutFeaturesResponse(Split(v[5]), &r) == Code::kOk);
    CHECK(r.n_rows == 3 && r.status[1] == kRowStale);
  }
  {
    IngestRequest m;
    CHECK(DecodeIngestRequest(Split(v[6]), Limits{}, keys, 8, &m) == Code::kOk);
    CHECK(m.window_set == "spend" && m.n_events == 2 && keys[0].s == "u1");
    double vals[2];
    CopyF64(m.values, 2, vals);
    CHECK(vals[1] == 2);
    IngestResponse r;
    CHECK(DecodeIngestResponse(Split(v[7]), &r) == Code::kOk);
    CHECK(r.accepted == 5 && r.dropped == 2);
  }
  {
    ScoreBatchRequest m;  // zero rows: no key buffer needed
    CHECK(DecodeScoreBatchRequest(Split(v[8]), Limits{}, nullptr, 0, &m) == Code::kOk);
    CHECK(m.n_rows == 0 && m.n_keys == 2);
  }
}

RTML_TEST(AdminMessagesDecodeTheirFields) {
  const auto v = AdminFrames();
  std::string_view s;
  CHECK(DecodeStatsRequest(Split(v[0]), Limits{}, &s) == Code::kOk && s == "fraud");
  CHECK(DecodeStatsResponse(Split(v[1]), &s) == Code::kOk && s == "{\"rows\": 3}");
  ModelLoadRequest ml;
  CHECK(DecodeModelLoadRequest(Split(v[2]), Limits{}, &ml) == Code::kOk);
  CHECK(ml.name == "gbm" && ml.source == ModelSource::kPath && ml.path == "/models/gbm.rtml" && ml.size == 0);
  CHECK(DecodeModelLoadRequest(Split(v[3]), Limits{}, &ml) == Code::kOk);
  CHECK(ml.source == ModelSource::kInline && ml.path.empty() && ml.size == sizeof(kModelBytes) &&
        std::memcmp(ml.data, kModelBytes, ml.size) == 0);
  CHECK(DecodeModelLoadResponse(Split(v[4]), Limits{}, &s) == Code::kOk && s == "v-abc123");
  ModelSwapRequest ms;
  CHECK(DecodeModelSwapRequest(Split(v[5]), Limits{}, &ms) == Code::kOk);
  CHECK(ms.scorer == "fraud" && ms.model == "gbm" && ms.role == ModelRole::kShadow && ms.arm == "b");
  CHECK(DecodeModelSwapResponse(Split(v[6]), Limits{}, &s) == Code::kOk && s == "v-old");
  // An error frame is not a response of these kinds.
  const Bytes err = Encode([](uint8_t* o, size_t c) {
    return EncodeError(static_cast<uint16_t>(Opcode::kModelLoad), 1, Code::kModelError, "bad file", false, o, c);
  });
  CHECK(DecodeModelLoadResponse(Split(err), Limits{}, &s) == Code::kModelError);
  CHECK(DecodeStatsResponse(Split(err), &s) == Code::kModelError);
}

RTML_TEST(BatchLimitsAreTooMany) {
  const auto v = BatchFrames();
  Key keys[8];
  Limits lim;
  lim.max_rows = 2;
  ScoreBatchRequest sb;
  GetFeaturesRequest g;
  PutFeaturesRequest p;
  IngestRequest in;
  CHECK(DecodeScoreBatchRequest(Split(v[0]), lim, keys, 8, &sb) == Code::kTooMany);
  CHECK(DecodePutFeaturesRequest(Split(v[4]), lim, keys, 8, &p) == Code::kTooMany);
  CHECK(DecodePutFeaturesRequest(Split(v[4]), Limits{}, keys, 2, &p) == Code::kTooMany);
  lim.max_rows = 1;
  CHECK(DecodeGetFeaturesRequest(Split(v[2]), lim, keys, 8, &g) == Code::kTooMany);
  CHECK(DecodeIngestRequest(Split(v[6]), lim, keys, 8, &in) == Code::kTooMany);
  CHECK(DecodeIngestRequest(Split(v[6]), Limits{}, keys, 1, &in) == Code::kTooMany);
  lim = Limits{};
  lim.max_keys = 1;
  CHECK(DecodeScoreBatchRequest(Split(v[0]), lim, keys, 8, &sb) == Code::kTooMany);
  lim = Limits{};
  lim.max_fields = 1;
  CHECK(DecodeScoreBatchRequest(Split(v[0]), lim, keys, 8, &sb) == Code::kTooMany);
  CHECK(DecodePutFeaturesRequest(Split(v[4]), lim, keys, 8, &p) == Code::kTooMany);
  lim = Limits{};
  lim.max_key_bytes = 2;
  CHECK(DecodeScoreBatchRequest(Split(v[0]), lim, keys, 8, &sb) == Code::kStringTooLong);
  CHECK(DecodeGetFeaturesRequest(Split(v[2]), lim, keys, 8, &g) == Code::kStringTooLong);
  lim.max_name_bytes = 3;
  CHECK(DecodeIngestRequest(Split(v[6]), lim, keys, 8, &in) == Code::kStringTooLong);
  // A path longer than kMaxPathBytes.
  const std::string long_path(kMaxPathBytes + 1, 'p');
  ModelLoadRequest ml;
  ml.name = "m";
  ml.path = long_path;
  const Bytes b = Encode([&](uint8_t* o, size_t c) { return EncodeModelLoadRequest(1, ml, o, c); });
  CHECK(DecodeModelLoadRequest(Split(b), Limits{}, &ml) == Code::kStringTooLong);
}

RTML_TEST(KeyColumnKinds) {
  // Encoders refuse a column whose rows mix kinds, and unknown enum values.
  const Key mixed[] = {Key::Int(1), Key::Str("x")};
  GetFeaturesRequest g;
  g.table = "t";
  g.n_keys = 2;
  g.keys = mixed;
  CHECK(EncodeGetFeaturesRequest(1, g, nullptr, 0) == 0);
  ScoreBatchRequest sb;  // column 0 of rows 0 and 1 is (Int, Str)
  const Key rows[] = {Key::Int(1), Key::Int(2), Key::Str("a"), Key::Int(3)};
  const double fields[2] = {0, 0};
  sb.scorer = "s";
  sb.n_rows = 2;
  sb.n_keys = 2;
  sb.n_fields = 1;
  sb.keys = rows;
  sb.fields = fields;
  CHECK(EncodeScoreBatchRequest(1, sb, nullptr, 0) == 0);
  ModelSwapRequest ms;
  ms.role = static_cast<ModelRole>(2);
  CHECK(EncodeModelSwapRequest(1, ms, nullptr, 0) == 0);
  ModelLoadRequest ml;
  ml.source = static_cast<ModelSource>(2);
  CHECK(EncodeModelLoadRequest(1, ml, nullptr, 0) == 0);
}

RTML_TEST(LyingBatchCounts) {
  auto frame_with = [](Opcode op, uint16_t flags, const Bytes& payload) {
    Header h;
    h.opcode = static_cast<uint16_t>(op);
    h.flags = flags;
    h.payload_len = static_cast<uint32_t>(payload.size());
    Bytes b(kHeaderSize);
    WriteHeader(h, b.data());
    b.insert(b.end(), payload.begin(), payload.end());
    return b;
  };
  Key keys[8];
  GetFeaturesRequest g;
  // table "t", now 0, n_keys, then a key column
  auto get = [&](uint32_t n, const Bytes& column) {
    Bytes p = {1, 0, 't', 0, 0, 0, 0, 0, 0, 0, 0};
    p.insert(p.end(), reinterpret_cast<const uint8_t*>(&n), reinterpret_cast<const uint8_t*>(&n) + 4);
    p.insert(p.end(), column.begin(), column.end());
    return DecodeGetFeaturesRequest(Split(frame_with(Opcode::kGetFeatures, 0, p)), Limits{}, keys, 8, &g);
  };
  CHECK(get(2, {0, 1, 0, 0, 0, 0, 0, 0, 0}) == Code::kMalformed);  // 2 int keys, 1 present
  CHECK(get(2, {1, 1, 0, 'a'}) == Code::kMalformed);               // 2 str keys, 1 present
  CHECK(get(2, {1, 5, 0, 'a', 0, 0}) == Code::kMalformed);         // str length lies
  CHECK(get(0xFFFFFFFF, {0}) == Code::kTooMany);                   // refused before reading
  CHECK(get(1, {2, 0, 0, 0, 0, 0, 0, 0, 0}) == Code::kBadKeyKind);
  CHECK(get(0, {1}) == Code::kMalformed);  // an empty column is of kind int
  CHECK(get(0, {0}) == Code::kOk);
  CHECK(get(1, {0, 1, 0, 0, 0, 0, 0, 0, 0, 0xAA}) == Code::kMalformed);  // trailing byte
  // SCORE_BATCH: 65536 rows x 4096 fields claimed in a few bytes
  ScoreBatchRequest sb;
  Bytes q = {1, 0, 's', /*now_ns*/ 0, 0, 0, 0, 0, 0, 0, 0, /*n_rows*/ 0, 0, 1, 0, /*n_keys*/ 0, 0,
             /*n_fields*/ 0, 0x10, 0, 0, 1, 2, 3};
  CHECK(DecodeScoreBatchRequest(Split(frame_with(Opcode::kScoreBatch, 0, q)), Limits{}, keys, 8, &sb) ==
        Code::kMalformed);
  // Responses: n_rows * n_outputs and n_keys far beyond the payload
  ScoreBatchResponse sbr;
  Bytes r = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 1, 2};
  CHECK(DecodeScoreBatchResponse(Split(frame_with(Opcode::kScoreBatch, kFlagResponse, r)), &sbr) ==
        Code::kMalformed);
  Bytes rr = {1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};  // nonzero reserved
  CHECK(DecodeScoreBatchResponse(Split(frame_with(Opcode::kScoreBatch, kFlagResponse, rr)), &sbr) ==
        Code::kMalformed);
  GetFeaturesResponse gr;
  Bytes gq = {0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 1};
  CHECK(DecodeGetFeaturesResponse(Split(frame_with(Opcode::kGetFeatures, kFlagResponse, gq)), &gr) ==
        Code::kMalformed);
  Bytes found2 = {1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0};  // found byte 2
  CHECK(DecodeGetFeaturesResponse(Split(frame_with(Opcode::kGetFeatures, kFlagResponse, found2)), &gr) ==
        Code::kMalformed);
  PutFeaturesResponse pr;
  Bytes pq = {3, 0, 0, 0, 0, 0};
  CHECK(DecodePutFeaturesResponse(Split(frame_with(Opcode::kPutFeatures, kFlagResponse, pq)), &pr) ==
        Code::kMalformed);
  std::string_view s;
  Bytes st = {0xFF, 0xFF, 0xFF, 0x7F, '{', '}'};
  CHECK(DecodeStatsResponse(Split(frame_with(Opcode::kStats, kFlagResponse, st)), &s) == Code::kMalformed);
  ModelLoadRequest ml;
  Bytes inl = {1, 0, 'm', 1, 0xFF, 0xFF, 0, 0, 1, 2};
  CHECK(DecodeModelLoadRequest(Split(frame_with(Opcode::kModelLoad, 0, inl)), Limits{}, &ml) == Code::kMalformed);
  Bytes src = {1, 0, 'm', 7, 0, 0};
  CHECK(DecodeModelLoadRequest(Split(frame_with(Opcode::kModelLoad, 0, src)), Limits{}, &ml) == Code::kBadValue);
  ModelSwapRequest ms;
  Bytes role = {1, 0, 's', 1, 0, 'm', 9, 0, 0};
  CHECK(DecodeModelSwapRequest(Split(frame_with(Opcode::kModelSwap, 0, role)), Limits{}, &ms) == Code::kBadValue);
}

RTML_TEST(MutationFuzz) {
  const auto frames = ValidFrames();
  Rng rng{0x9E3779B97F4A7C15ULL};
  int decoded = 0;
  for (int it = 0; it < kFuzzIterations; ++it) {
    Bytes b = frames[rng.Below(frames.size())];
    if (rng.Below(4) == 0) {  // a pipelined pair
      const Bytes& other = frames[rng.Below(frames.size())];
      b.insert(b.end(), other.begin(), other.end());
    }
    const int n_mut = 1 + static_cast<int>(rng.Below(4));
    for (int m = 0; m < n_mut && !b.empty(); ++m) {
      const size_t at = rng.Below(b.size());
      switch (rng.Below(6)) {
        case 0:
          b[at] = static_cast<uint8_t>(rng.Next());
          break;
        case 1:
          b[at] ^= static_cast<uint8_t>(1u << rng.Below(8));
          break;
        case 2:
          b.erase(b.begin() + static_cast<ptrdiff_t>(at));
          break;
        case 3:
          b.insert(b.begin() + static_cast<ptrdiff_t>(at), static_cast<uint8_t>(rng.Next()));
          break;
        case 4:
          b.resize(at);
          break;
        default: {  // an interesting value over 2 or 4 bytes: the lengths and counts
          const uint32_t vals[] = {0, 1, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 16u << 20};
          const uint32_t v = vals[rng.Below(7)];
          const size_t w = rng.Below(2) ? 2 : 4;
          if (at + w <= b.size()) std::memcpy(b.data() + at, &v, w);
        }
      }
    }
    CheckStream(b.data(), b.size(), &decoded);
  }
  CHECK(decoded > kFuzzIterations / 20);  // the mutations still reach the decoders
}

RTML_TEST_MAIN()

// rtml::server::Engine and Session (rtml/engine.h): frames in, responses out.
#include "rtml/engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>
#include <exception>
#include <mutex>
#include <string>

namespace rtml::server {
namespace {

using wire::Code;
using wire::Frame;
using wire::Opcode;

int64_t ClockNs() noexcept {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// Bounded constant-time comparison (the token must not leak by timing).
bool SameToken(std::string_view a, std::string_view b) noexcept {
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  const size_t n = a.size() < b.size() ? a.size() : b.size();
  for (size_t i = 0; i < n; ++i) diff |= static_cast<unsigned>(a[i] ^ b[i]);
  return diff == 0;
}

std::string Quoted(std::string_view s) { return "'" + std::string(s.substr(0, 255)) + "'"; }

Code CodeOf(TableStatus st) noexcept {
  switch (st) {
    case TableStatus::kOk:
    case TableStatus::kStale:
      return Code::kOk;
    case TableStatus::kNotFound:
      return Code::kNotFound;
    case TableStatus::kFull:
      return Code::kTableFull;
    case TableStatus::kKeyTooLong:
      return Code::kStringTooLong;
    case TableStatus::kBadKeyKind:
      return Code::kBadKeyKind;
    case TableStatus::kBadValue:
      return Code::kBadValue;
  }
  return Code::kInternal;
}

MatrixView RowMajor(const void* data, size_t rows, uint32_t cols, DType dtype) noexcept {
  MatrixView v;
  v.data = data;
  v.rows = static_cast<int64_t>(rows);
  v.cols = cols;
  v.row_stride = cols;
  v.col_stride = 1;
  v.dtype = dtype;
  return v;
}

// n_rows * n_keys of a SCORE_BATCH payload (str16 scorer, i64 now_ns, u32
// n_rows, u16 n_keys), or 0 when it is too short to say.
size_t DeclaredBatchKeys(const Frame& f) noexcept {
  wire::Reader r(f.payload, f.header.payload_len);
  std::string_view name;
  int64_t now = 0;
  uint32_t rows = 0;
  uint16_t keys = 0;
  if (r.Str16(0xFFFF, &name) != Code::kOk || !r.I64(&now) || !r.U32(&rows) || !r.U16(&keys)) return 0;
  return size_t{rows} * keys;
}

template <typename T>
T* Grow(std::vector<T>* v, size_t n) {
  if (v->size() < n) v->resize(n);
  return v->data();
}

}  // namespace

Engine::Engine(EngineConfig config) : config_(std::move(config)) {
  if (config_.max_in_flight == 0) throw InputError("max_in_flight must be at least 1");
  if (config_.token.size() > config_.limits.max_token_bytes) {
    throw InputError("the token is longer than max_token_bytes (" +
                     std::to_string(config_.limits.max_token_bytes) + ")");
  }
}

// Replaces the entry of the same name, or appends one (exclusive lock held).
template <typename T>
void Engine::Put(std::vector<T>* entries, T entry) {
  std::unique_lock lock(mu_);
  for (auto& e : *entries) {
    if (e.name == entry.name) {
      e = std::move(entry);
      return;
    }
  }
  entries->push_back(std::move(entry));
}

void Engine::SetScorer(const std::string& name, const Scorer* scorer, ScoreObserver* observer) {
  if (scorer == nullptr) throw InputError("SetScorer: no scorer");
  Put(&scorers_, ScorerEntry{name, scorer, observer});
}

void Engine::SetModel(const std::string& name, std::shared_ptr<const Forest> model) {
  if (model == nullptr) throw InputError("SetModel: no model");
  Put(&models_, ModelEntry{name, std::move(model)});
}

void Engine::SetTable(const std::string& name, FeatureTable* table, std::vector<FieldKind> fields,
                      int64_t max_future_ns) {
  if (table == nullptr) throw InputError("SetTable: no table");
  if (fields.size() != table->schema().num_fields) {
    throw InputError("SetTable '" + name + "': " + std::to_string(fields.size()) + " field kinds for " +
                     std::to_string(table->schema().num_fields) + " fields");
  }
  Put(&tables_, TableEntry{name, table, std::move(fields), max_future_ns});
}

void Engine::SetWindows(const std::string& name, WindowTable* windows, int64_t max_future_ns) {
  if (windows == nullptr) throw InputError("SetWindows: no window set");
  Put(&windows_, WindowEntry{name, windows, max_future_ns});
}

bool Engine::RemoveModel(const std::string& name) {
  std::unique_lock lock(mu_);
  for (auto it = models_.begin(); it != models_.end(); ++it) {
    if (it->name == name) {
      models_.erase(it);
      return true;
    }
  }
  return false;
}

Engine::Counters Engine::counters() const noexcept {
  Counters c;
  c.frames = frames_.load(std::memory_order_relaxed);
  c.errors = errors_.load(std::memory_order_relaxed);
  c.deferred = deferred_.load(std::memory_order_relaxed);
  c.fatal = fatal_.load(std::memory_order_relaxed);
  return c;
}

Session::Session(Engine* engine) : engine_(engine), authorized_(engine->config().token.empty()) {
  out_.reserve(4096);
}

template <typename Encode>
void Session::Append(Encode&& encode) {
  const size_t at = out_.size();
  size_t room = out_.capacity() - at;
  if (room < 256) room = 256;
  out_.resize(at + room);
  size_t n = encode(reinterpret_cast<uint8_t*>(out_.data() + at), room);
  if (n > room) {
    out_.resize(at + n);
    n = encode(reinterpret_cast<uint8_t*>(out_.data() + at), n);
  }
  out_.resize(at + n);
}

void Session::Error(const Frame& f, Code code, std::string_view message) {
  const bool fatal = wire::IsFatal(code);
  engine_->errors_.fetch_add(1, std::memory_order_relaxed);
  if (fatal) closing_ = true;
  Append([&](uint8_t* p, size_t cap) {
    return wire::EncodeError(f.header.opcode, f.header.request_id, code, message, fatal, p, cap);
  });
}

Session::Result Session::Handle(const uint8_t* in, size_t n, size_t max_frames) noexcept {
  Result res;
  wire::FrameSplitter split(in, n, engine_->config_.limits);
  try {
    std::shared_lock lock(engine_->mu_);
    while (res.frames < max_frames && !closing_) {
      Frame f;
      Code err = Code::kOk;
      const wire::SplitResult sr = split.Next(&f, &err);
      if (sr == wire::SplitResult::kNeedMore) break;
      if (sr == wire::SplitResult::kFatal) {
        Frame none;
        none.header.opcode = wire::kOpcodeNone;
        Error(none, err, std::string("unreadable frame header at byte ") + std::to_string(split.consumed()) +
                             " of this read: " + wire::CodeName(static_cast<uint16_t>(err)) +
                             "; the stream cannot be resynchronized");
        break;
      }
      const size_t served = Serve(f, &split, max_frames - res.frames);
      if (served == 0) {  // the caller's: STATS, MODEL_LOAD, MODEL_SWAP
        deferred_ = f;
        engine_->deferred_.fetch_add(1, std::memory_order_relaxed);
        res.action = Action::kDefer;
        res.consumed = split.consumed() - f.size;
        return res;
      }
      engine_->frames_.fetch_add(served, std::memory_order_relaxed);
      res.frames += served;
    }
    res.consumed = split.consumed();
  } catch (const std::exception& e) {
    Frame none;
    Error(none, Code::kInternal, std::string("server error: ") + e.what());
    closing_ = true;
    res.consumed = split.consumed();
  } catch (...) {
    closing_ = true;
    res.consumed = split.consumed();
  }
  if (closing_) {
    engine_->fatal_.fetch_add(1, std::memory_order_relaxed);
    res.action = Action::kClose;
  }
  return res;
}

// Decodes a request whose keys are one column (GET_FEATURES, PUT_FEATURES,
// INGEST) with keys_ as the key buffer; false after answering an error.
template <typename Req, typename Decode>
bool Session::DecodeKeyed(const Frame& f, const char* op, Decode decode, Req* req) {
  const wire::Limits& lim = engine_->config_.limits;
  Key* keys = Grow(&keys_, std::min<size_t>(lim.max_rows, f.header.payload_len / 2 + 1));
  const Code c = decode(f, lim, keys, keys_.size(), req);
  if (c == Code::kOk) return true;
  Error(f, c, std::string(op) + " payload: " + wire::CodeName(static_cast<uint16_t>(c)));
  return false;
}

// The registry entry called name, or null after answering NOT_FOUND.
template <typename T>
const T* Session::Lookup(const Frame& f, const std::vector<T>& entries, std::string_view name, const char* what) {
  const T* e = Engine::Find(entries, name);
  if (e == nullptr) Error(f, Code::kNotFound, std::string("no ") + what + " named " + Quoted(name));
  return e;
}

size_t Session::Serve(const Frame& f, wire::FrameSplitter* split, size_t budget) {
  const Code hc = wire::CheckRequestHeader(f.header);
  if (hc != Code::kOk) {
    Error(f, hc,
          hc == Code::kUnknownOpcode
              ? "unknown opcode " + std::to_string(f.header.opcode) + "; see docs/protocol.md for the opcodes"
              : std::string("bad request header: ") + wire::CodeName(static_cast<uint16_t>(hc)));
    return 1;
  }
  const Opcode op = static_cast<Opcode>(f.header.opcode);
  if (op == Opcode::kHello) {
    Hello(f);
    return 1;
  }
  if (!authorized_) {
    Error(f, Code::kUnauthorized, "this server requires a HELLO with its token as the first request");
    return 1;
  }
  if (engine_->draining()) {
    Error(f, Code::kShuttingDown, "the server is shutting down; reconnect elsewhere");
    return 1;
  }
  switch (op) {
    case Opcode::kPing:
      Ping(f);
      break;
    case Opcode::kScore:  // pipelined SCOREs that arrived together are scored as one batch
      return ScoreRun(f, split, budget);
    case Opcode::kScoreBatch:
      ScoreBatch(f);
      break;
    case Opcode::kPredict:
      return PredictRun(f, split, budget);
    case Opcode::kGetFeatures:
      GetFeatures(f);
      break;
    case Opcode::kPutFeatures:
      PutFeatures(f);
      break;
    case Opcode::kIngest:
      Ingest(f);
      break;
    case Opcode::kStats:
      return 0;  // answered by the caller (Python objects)
    case Opcode::kModelLoad:
    case Opcode::kModelSwap:
      if (engine_->config_.admin) return 0;
      Error(f, Code::kUnauthorized, "admin operations are disabled on this server (start it with --admin)");
      break;
    case Opcode::kHello:
      break;
  }
  return 1;
}

void Session::Hello(const Frame& f) {
  wire::HelloRequest req;
  const Code c = wire::DecodeHelloRequest(f, engine_->config_.limits, &req);
  if (c != Code::kOk) {
    Error(f, c, "malformed HELLO payload");
    return;
  }
  const std::string& token = engine_->config_.token;
  if (!token.empty() && !SameToken(req.token, token)) {
    Error(f, Code::kUnauthorized, req.token.empty() ? "this server requires a token" : "wrong token");
    return;
  }
  authorized_ = true;
  wire::HelloResponse resp;
  resp.max_payload = engine_->config_.limits.max_payload;
  resp.max_in_flight = engine_->config_.max_in_flight;
  resp.server = engine_->config_.server_name;
  Append([&](uint8_t* p, size_t cap) { return wire::EncodeHelloResponse(f.header.request_id, resp, p, cap); });
}

void Session::Ping(const Frame& f) {
  const std::string_view echo(reinterpret_cast<const char*>(f.payload), f.header.payload_len);
  Append([&](uint8_t* p, size_t cap) {
    return wire::EncodePing(f.header.request_id, wire::kFlagResponse, echo, p, cap);
  });
}

// Decodes a SCORE frame with the connection's limits into keys_ / doubles_ and
// checks it against its scorer; null after answering what is wrong.
const Engine::ScorerEntry* Session::CheckScore(const Frame& f, wire::ScoreRequest* out) {
  const wire::Limits& lim = engine_->config_.limits;
  Key* keys = Grow(&keys_, lim.max_keys);
  double* fields = Grow(&doubles_, lim.max_fields);
  wire::ScoreRequest& req = *out;
  Code c = wire::DecodeScoreRequest(f, lim, keys, lim.max_keys, fields, lim.max_fields, &req);
  if (c != Code::kOk) {
    Error(f, c, "SCORE payload: " + std::string(wire::CodeName(static_cast<uint16_t>(c))));
    return nullptr;
  }
  const auto* e = Lookup(f, engine_->scorers_, req.scorer, "scorer");
  if (e == nullptr) return nullptr;
  const ScorerPlan& plan = e->scorer->plan();
  if (req.n_keys != plan.keys.size() || req.n_fields != plan.num_fields) {
    Error(f, Code::kBadShape,
          "scorer " + Quoted(req.scorer) + " takes " + std::to_string(plan.keys.size()) + " keys and " +
              std::to_string(plan.num_fields) + " fields, got " + std::to_string(req.n_keys) + " and " +
              std::to_string(req.n_fields));
    return nullptr;
  }
  for (size_t k = 0; k < req.n_keys; ++k) {
    if (keys[k].is_string != (plan.keys[k] == KeyKind::kString)) {
      Error(f, Code::kBadKeyKind,
            "scorer " + Quoted(req.scorer) + ", key " + std::to_string(k) + ": expected " +
                (plan.keys[k] == KeyKind::kString ? "a string" : "an int64") + " key");
      return nullptr;
    }
  }
  return e;
}

// Decodes SCORE frame f into slot i of the run buffers when it can join a run
// of scorer e (same scorer, shape and key kinds; the caller checks the time);
// false otherwise (the frame then starts a run of its own).
bool Session::DecodeRunSlot(const Frame& f, const Engine::ScorerEntry* e, size_t i, wire::ScoreRequest* req) {
  const ScorerPlan& plan = e->scorer->plan();
  const size_t nk = plan.keys.size(), nf = plan.num_fields;
  Key* keys = run_keys_.data() + i * nk;
  double* fields = run_fields_.data() + i * nf;
  if (wire::DecodeScoreRequest(f, engine_->config_.limits, keys, nk, fields, nf, req) != Code::kOk) return false;
  if (req->scorer != e->name || req->n_keys != nk || req->n_fields != nf) return false;
  for (size_t k = 0; k < nk; ++k) {
    if (keys[k].is_string != (plan.keys[k] == KeyKind::kString)) return false;
  }
  return true;
}

size_t Session::ScoreRun(const Frame& first, wire::FrameSplitter* split, size_t budget) {
  // The first frame names the scorer and the time; one that cannot be scored
  // as asked is answered with its error.
  wire::ScoreRequest req;
  const auto* e = CheckScore(first, &req);
  if (e == nullptr) return 1;
  const ScorerPlan& plan = e->scorer->plan();
  const size_t nk = plan.keys.size(), nf = plan.num_fields;
  const size_t most = std::min(budget, kMaxScoreRun);
  Grow(&run_keys_, std::max<size_t>(most * nk, 1));
  Grow(&run_fields_, std::max<size_t>(most * nf, 1));
  Grow(&run_frames_, most);
  std::copy(req.keys, req.keys + nk, run_keys_.begin());
  std::copy(req.fields, req.fields + nf, run_fields_.begin());
  const int64_t now_ns = req.now_ns;
  run_frames_[0] = first;
  size_t n = 1;
  while (n < most) {
    wire::FrameSplitter peek = *split;
    Frame g;
    Code err;
    wire::ScoreRequest next;
    if (peek.Next(&g, &err) != wire::SplitResult::kFrame || g.header.opcode != first.header.opcode ||
        wire::CheckRequestHeader(g.header) != Code::kOk || !DecodeRunSlot(g, e, n, &next) || next.now_ns != now_ns) {
      break;
    }
    run_frames_[n++] = g;
    *split = peek;
  }
  const size_t n_out = static_cast<size_t>(e->scorer->num_outputs());
  double* out = Grow(&outputs_, n * n_out);
  const int64_t now = now_ns != 0 ? now_ns : ClockNs();
  Status st;
  if (n == 1) {
    st = e->scorer->Score(run_keys_.data(), run_fields_.data(), now, out, nullptr, e->observer);
  } else {
    st = e->scorer->ScoreMany(run_keys_.data(), run_fields_.data(), n, now, out, nullptr, e->observer);
  }
  for (size_t i = 0; i < n; ++i) {
    const Frame& f = run_frames_[i];
    // A failed batch names no row: find the refused rows one by one.
    if (st != Status::kOk && e->scorer->Score(run_keys_.data() + i * nk, run_fields_.data() + i * nf, now,
                                              out + i * n_out) != Status::kOk) {
      Error(f, Code::kModelError,
            "the model refused the row (a value its native library rejects, e.g. inf for scikit-learn)");
      continue;
    }
    wire::ScoreResponse resp;
    resp.outputs = out + i * n_out;
    resp.n_outputs = n_out;
    Append([&](uint8_t* p, size_t cap) { return wire::EncodeScoreResponse(f.header.request_id, resp, p, cap); });
  }
  return n;
}

size_t Session::PredictRun(const Frame& first, wire::FrameSplitter* split, size_t budget) {
  // The first frame names the model and the row layout; anything unusual is
  // served alone by Predict, which answers with the precise error.
  const wire::Limits& lim = engine_->config_.limits;
  wire::PredictRequest req;
  if (wire::DecodePredictRequest(first, lim, &req) != Code::kOk || req.n_rows == 0) {
    Predict(first);
    return 1;
  }
  const auto* e = Engine::Find(engine_->models_, req.model);
  if (e == nullptr || req.n_cols != static_cast<uint32_t>(e->model->num_features())) {
    Predict(first);
    return 1;
  }
  const Forest& model = *e->model;
  const size_t item = req.dtype == DType::kFloat32 ? sizeof(float) : sizeof(double);
  const size_t row_bytes = size_t{req.n_cols} * item;
  const size_t most = std::min(budget, kMaxScoreRun);
  Grow(&run_frames_, most);
  Grow(&run_rows_, most);
  // Rows of every frame of the run, back to back (aligned for the forest).
  size_t rows = 0;
  auto append = [&](const wire::PredictRequest& r) {
    const size_t at = rows * row_bytes;
    Grow(&run_x_, (at + size_t{r.n_rows} * row_bytes + sizeof(double) - 1) / sizeof(double));
    std::memcpy(reinterpret_cast<uint8_t*>(run_x_.data()) + at, r.data, size_t{r.n_rows} * row_bytes);
    rows += r.n_rows;
  };
  append(req);
  run_frames_[0] = first;
  run_rows_[0] = req.n_rows;
  size_t n = 1;
  while (n < most && rows < kMaxPredictRows) {
    wire::FrameSplitter peek = *split;
    Frame g;
    Code err;
    wire::PredictRequest next;
    if (peek.Next(&g, &err) != wire::SplitResult::kFrame || g.header.opcode != first.header.opcode ||
        wire::CheckRequestHeader(g.header) != Code::kOk ||
        wire::DecodePredictRequest(g, lim, &next) != Code::kOk || next.model != req.model ||
        next.dtype != req.dtype || next.n_cols != req.n_cols || next.n_rows == 0 ||
        rows + next.n_rows > kMaxPredictRows) {
      break;
    }
    append(next);
    run_frames_[n] = g;
    run_rows_[n++] = next.n_rows;
    *split = peek;
  }
  const MatrixView view = RowMajor(run_x_.data(), rows, req.n_cols, req.dtype);
  int64_t bad_row = 0, bad_col = 0;
  if (model.rejects() != 0 && model.FindRejected(view, &bad_row, &bad_col)) {
    // A refused value somewhere: serve the frames one by one, so only the
    // frames holding one get an error.
    for (size_t i = 0; i < n; ++i) Predict(run_frames_[i]);
    return n;
  }
  const uint32_t n_out = static_cast<uint32_t>(model.num_columns(false));
  double* out = Grow(&outputs_, rows * n_out);
  if (model.Predict(view, out, false, 1) != Status::kOk) {
    for (size_t i = 0; i < n; ++i) Predict(run_frames_[i]);
    return n;
  }
  for (size_t i = 0, row = 0; i < n; row += run_rows_[i], ++i) {
    wire::PredictResponse resp;
    resp.n_rows = run_rows_[i];
    resp.n_outputs = n_out;
    resp.values = out + row * n_out;
    const Frame& f = run_frames_[i];
    Append([&](uint8_t* p, size_t cap) { return wire::EncodePredictResponse(f.header.request_id, resp, p, cap); });
  }
  return n;
}

void Session::Predict(const Frame& f) {
  wire::PredictRequest req;
  Code c = wire::DecodePredictRequest(f, engine_->config_.limits, &req);
  if (c != Code::kOk) {
    Error(f, c, "PREDICT payload: " + std::string(wire::CodeName(static_cast<uint16_t>(c))));
    return;
  }
  const auto* e = Lookup(f, engine_->models_, req.model, "model");
  if (e == nullptr) return;
  const Forest& model = *e->model;
  if (req.n_rows != 0 && req.n_cols != static_cast<uint32_t>(model.num_features())) {
    Error(f, Code::kBadShape,
          "model " + Quoted(req.model) + " takes " + std::to_string(model.num_features()) + " columns, got " +
              std::to_string(req.n_cols));
    return;
  }
  // Wire bytes are unaligned: copy them to an aligned buffer first.
  const size_t item = req.dtype == DType::kFloat32 ? sizeof(float) : sizeof(double);
  const size_t cells = size_t{req.n_rows} * req.n_cols;
  double* x = Grow(&doubles_, (cells * item + sizeof(double) - 1) / sizeof(double));
  if (cells != 0) std::memcpy(x, req.data, cells * item);
  const MatrixView view = RowMajor(x, req.n_rows, req.n_cols, req.dtype);
  int64_t bad_row = 0, bad_col = 0;
  if (model.rejects() != 0 && model.FindRejected(view, &bad_row, &bad_col)) {
    Error(f, Code::kBadValue,
          "row " + std::to_string(bad_row) + ", column " + std::to_string(bad_col) +
              ": a value the model's native library refuses (e.g. inf for scikit-learn)");
    return;
  }
  const uint32_t n_out = static_cast<uint32_t>(model.num_columns(false));
  double* out = Grow(&outputs_, size_t{req.n_rows} * n_out);
  if (req.n_rows != 0 && model.Predict(view, out, false, 1) != Status::kOk) {
    Error(f, Code::kModelError, "the model refused the rows");
    return;
  }
  wire::PredictResponse resp;
  resp.n_rows = req.n_rows;
  resp.n_outputs = n_out;
  resp.values = out;
  Append([&](uint8_t* p, size_t cap) { return wire::EncodePredictResponse(f.header.request_id, resp, p, cap); });
}

// Checks that a key column has the kind the target takes.
bool Session::KeyKindsMatch(const Frame& f, const Key* keys, size_t n, KeyKind kind, std::string_view what) {
  const bool str = kind == KeyKind::kString;
  for (size_t i = 0; i < n; ++i) {
    if (keys[i].is_string != str) {
      Error(f, Code::kBadKeyKind,
            std::string(what) + ", row " + std::to_string(i) + ": expected " + (str ? "a string" : "an int64") +
                " key");
      return false;
    }
  }
  return true;
}

// Event times beyond the target's max_future tolerance refuse the request.
bool Session::TimesInRange(const Frame& f, const int64_t* event_ns, size_t n, int64_t max_future_ns,
                           std::string_view what) {
  const int64_t limit = ClockNs() + max_future_ns;
  for (size_t i = 0; i < n; ++i) {
    if (event_ns[i] > limit) {
      Error(f, Code::kBadValue,
            std::string(what) + ", row " + std::to_string(i) + ": event time " + std::to_string(event_ns[i]) +
                " ns is more than max_future ahead of the server's clock; nothing was written");
      return false;
    }
  }
  return true;
}

void Session::ScoreBatch(const Frame& f) {
  const wire::Limits& lim = engine_->config_.limits;
  const size_t key_cap = size_t{lim.max_rows} * lim.max_keys;
  wire::ScoreBatchRequest req;
  // Grow the key buffer to what this frame declares (the decoder checks it
  // against the bytes present), not to the limit.
  // A key takes at least 2 bytes on the wire, so a lying count cannot make
  // this buffer larger than the frame warrants.
  Key* keys = Grow(&keys_, std::min({key_cap, DeclaredBatchKeys(f), f.header.payload_len / size_t{2} + 1}));
  Code c = wire::DecodeScoreBatchRequest(f, lim, keys, keys_.size(), &req);
  if (c != Code::kOk) {
    Error(f, c, "SCORE_BATCH payload: " + std::string(wire::CodeName(static_cast<uint16_t>(c))));
    return;
  }
  const auto* e = Lookup(f, engine_->scorers_, req.scorer, "scorer");
  if (e == nullptr) return;
  const ScorerPlan& plan = e->scorer->plan();
  if (req.n_keys != plan.keys.size() || req.n_fields != plan.num_fields) {
    Error(f, Code::kBadShape,
          "scorer " + Quoted(req.scorer) + " takes " + std::to_string(plan.keys.size()) + " keys and " +
              std::to_string(plan.num_fields) + " fields per row, got " + std::to_string(req.n_keys) + " and " +
              std::to_string(req.n_fields));
    return;
  }
  for (size_t r = 0; r < req.n_rows; ++r) {
    for (size_t k = 0; k < req.n_keys; ++k) {
      if (keys[r * req.n_keys + k].is_string != (plan.keys[k] == KeyKind::kString)) {
        Error(f, Code::kBadKeyKind,
              "scorer " + Quoted(req.scorer) + ", key column " + std::to_string(k) + ": expected " +
                  (plan.keys[k] == KeyKind::kString ? "string" : "int64") + " keys");
        return;
      }
    }
  }
  const size_t cells = size_t{req.n_rows} * req.n_fields;
  double* fields = Grow(&doubles_, cells);
  wire::CopyF64(req.fields, cells, fields);
  const size_t n_out = static_cast<size_t>(e->scorer->num_outputs());
  double* out = Grow(&outputs_, size_t{req.n_rows} * n_out);
  uint8_t* row_status = Grow(&bytes_, req.n_rows);
  if (req.n_rows != 0) std::memset(row_status, 0, req.n_rows);
  const int64_t now = req.now_ns != 0 ? req.now_ns : ClockNs();
  if (req.n_rows != 0 && e->scorer->ScoreMany(keys, fields, req.n_rows, now, out, nullptr, e->observer) != Status::kOk) {
    // Find the rows the model refused: score them one by one.
    for (size_t r = 0; r < req.n_rows; ++r) {
      if (e->scorer->Score(keys + r * req.n_keys, fields + r * req.n_fields, now, out + r * n_out) != Status::kOk) {
        row_status[r] = static_cast<uint8_t>(Code::kModelError);
        for (size_t o = 0; o < n_out; ++o) out[r * n_out + o] = std::nan("");
      }
    }
  }
  wire::ScoreBatchResponse resp;
  resp.n_rows = req.n_rows;
  resp.n_outputs = static_cast<uint16_t>(n_out);
  resp.outputs = out;
  resp.status = row_status;
  Append([&](uint8_t* p, size_t cap) { return wire::EncodeScoreBatchResponse(f.header.request_id, resp, p, cap); });
}

void Session::GetFeatures(const Frame& f) {
  wire::GetFeaturesRequest req;
  if (!DecodeKeyed(f, "GET_FEATURES", wire::DecodeGetFeaturesRequest, &req)) return;
  const auto* e = Lookup(f, engine_->tables_, req.table, "table");
  if (e == nullptr) return;
  const Key* keys = req.keys;
  if (!KeyKindsMatch(f, keys, req.n_keys, e->table->schema().key_kind, "table " + Quoted(req.table))) return;
  const size_t n_fields = e->table->schema().num_fields;
  double* values = Grow(&outputs_, size_t{req.n_keys} * n_fields);
  int64_t* times = Grow(&times_, req.n_keys);
  TableStatus* sts = Grow(&statuses_, req.n_keys);
  uint8_t* found = Grow(&bytes_, req.n_keys);
  e->table->GetMany(keys, req.n_keys, req.now_ns != 0 ? req.now_ns : ClockNs(), values, times, sts);
  for (size_t i = 0; i < req.n_keys; ++i) {
    found[i] = sts[i] == TableStatus::kOk ? 1 : 0;
    if (found[i] == 0) {
      times[i] = 0;
      for (size_t j = 0; j < n_fields; ++j) values[i * n_fields + j] = std::nan("");
    }
  }
  wire::GetFeaturesResponse resp;
  resp.n_keys = req.n_keys;
  resp.n_fields = static_cast<uint32_t>(n_fields);
  resp.found = found;
  resp.event_ns = times;
  resp.values = values;
  Append([&](uint8_t* p, size_t cap) { return wire::EncodeGetFeaturesResponse(f.header.request_id, resp, p, cap); });
}

void Session::PutFeatures(const Frame& f) {
  wire::PutFeaturesRequest req;
  if (!DecodeKeyed(f, "PUT_FEATURES", wire::DecodePutFeaturesRequest, &req)) return;
  const auto* e = Lookup(f, engine_->tables_, req.table, "table");
  if (e == nullptr) return;
  const Key* keys = req.keys;
  const std::string what = "table " + Quoted(req.table);
  const size_t n_fields = e->fields.size();
  if (req.n_fields != n_fields) {
    Error(f, Code::kBadShape,
          what + " has " + std::to_string(n_fields) + " fields, got " + std::to_string(req.n_fields) + " per row");
    return;
  }
  if (!KeyKindsMatch(f, keys, req.n_rows, e->table->schema().key_kind, what)) return;
  const size_t cells = size_t{req.n_rows} * n_fields;
  double* values = Grow(&doubles_, cells);
  int64_t* times = Grow(&times_, req.n_rows);
  wire::CopyF64(req.values, cells, values);
  wire::CopyI64(req.event_ns, req.n_rows, times);
  if (!TimesInRange(f, times, req.n_rows, e->max_future_ns, what)) return;
  // Validate every row before writing any (all-or-nothing, as in-process).
  const uint32_t max_key = e->table->schema().max_key_bytes;
  for (size_t r = 0; r < req.n_rows; ++r) {
    if (keys[r].is_string && keys[r].s.size() > max_key) {
      Error(f, Code::kStringTooLong,
            what + ", row " + std::to_string(r) + ": key of " + std::to_string(keys[r].s.size()) +
                " bytes, the table takes at most " + std::to_string(max_key) + "; nothing was written");
      return;
    }
    for (size_t j = 0; j < n_fields; ++j) {
      double& v = values[r * n_fields + j];
      if (e->fields[j] == FieldKind::kInteger && !(std::isfinite(v) && v == std::nearbyint(v))) {
        Error(f, Code::kBadValue,
              what + ", row " + std::to_string(r) + ", field " + std::to_string(j) + ": expected an integer, got " +
                  std::to_string(v) + "; nothing was written");
        return;
      }
      if (e->fields[j] == FieldKind::kFloat32) v = static_cast<double>(static_cast<float>(v));
    }
  }
  uint8_t* row_status = Grow(&bytes_, req.n_rows);
  for (size_t r = 0; r < req.n_rows; ++r) {
    const TableStatus st = e->table->Upsert(keys[r], values + r * n_fields, times[r]);
    row_status[r] = st == TableStatus::kStale ? wire::kRowStale : static_cast<uint8_t>(CodeOf(st));
  }
  wire::PutFeaturesResponse resp;
  resp.n_rows = req.n_rows;
  resp.status = row_status;
  Append([&](uint8_t* p, size_t cap) { return wire::EncodePutFeaturesResponse(f.header.request_id, resp, p, cap); });
}

void Session::Ingest(const Frame& f) {
  wire::IngestRequest req;
  if (!DecodeKeyed(f, "INGEST", wire::DecodeIngestRequest, &req)) return;
  const auto* e = Lookup(f, engine_->windows_, req.window_set, "window set");
  if (e == nullptr) return;
  const Key* keys = req.keys;
  const std::string what = "windows " + Quoted(req.window_set);
  const FeatureTable& table = e->windows->table();
  if (!KeyKindsMatch(f, keys, req.n_events, table.schema().key_kind, what)) return;
  double* values = Grow(&doubles_, req.n_events);
  int64_t* times = Grow(&times_, req.n_events);
  wire::CopyF64(req.values, req.n_events, values);
  wire::CopyI64(req.event_ns, req.n_events, times);
  if (!TimesInRange(f, times, req.n_events, e->max_future_ns, what)) return;
  const uint32_t max_key = table.schema().max_key_bytes;
  for (size_t i = 0; i < req.n_events; ++i) {
    if (!std::isfinite(values[i])) {
      Error(f, Code::kBadValue,
            what + ", event " + std::to_string(i) + ": value " + std::to_string(values[i]) +
                " is not finite; nothing was stored");
      return;
    }
    if (keys[i].is_string && keys[i].s.size() > max_key) {
      Error(f, Code::kStringTooLong,
            what + ", event " + std::to_string(i) + ": key of " + std::to_string(keys[i].s.size()) +
                " bytes, the window set takes at most " + std::to_string(max_key) + "; nothing was stored");
      return;
    }
  }
  wire::IngestResponse resp;
  for (size_t i = 0; i < req.n_events; ++i) {
    const TableStatus st = e->windows->Ingest(keys[i], values[i], times[i]);
    if (st == TableStatus::kOk) {
      ++resp.accepted;
    } else if (st == TableStatus::kStale) {
      ++resp.dropped;
    } else {
      // Capacity ran out mid-batch: the events before i are stored.
      Error(f, CodeOf(st),
            what + ", event " + std::to_string(i) + ": " + wire::CodeName(static_cast<uint16_t>(CodeOf(st))) +
                "; the " + std::to_string(i) + " events before it were stored, none from it on");
      return;
    }
  }
  Append([&](uint8_t* p, size_t cap) { return wire::EncodeIngestResponse(f.header.request_id, resp, p, cap); });
}

}  // namespace rtml::server

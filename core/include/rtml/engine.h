// rtml::server::Engine: the server's request handling, without any I/O.
//
// The network layer (rtml/_wire.pyx on uvloop) owns sockets and buffers; for
// every read it hands the bytes to its connection's Session, which cuts the
// complete frames out, serves each one against the Engine's registry (scorers,
// models, feature tables, window sets) and appends the response frames to one
// output buffer, written to the socket with one write per read batch.
// Responses come out in request order (docs/protocol.md, "Pipelining").
//
// A few operations are answered outside the core (STATS, MODEL_LOAD,
// MODEL_SWAP: rare, and they need Python objects): Handle stops at such a frame
// with Action::kDefer and leaves it to the caller, who appends its response
// (AppendOut) and resumes after the frame.
//
// Thread-safety: an Engine is shared by all sessions; its registry may change
// (Set*/Remove*) while sessions handle frames: Handle holds a shared lock for
// the duration of one call, registry changes an exclusive one. A Session
// belongs to one connection and one thread at a time. Progress: Handle never
// blocks on anything but registry changes; scoring and store reads are
// lock-free (see rtml/scorer.h, rtml/feature_table.h).
// Cost: per frame, the codec's O(bytes) plus the operation itself; no
// allocation once a session's buffers have grown to the connection's largest
// frame.
// Limits: wire::Limits (frame size, names, keys, rows) and max_frames per
// Handle call (the caller's read-ahead bound).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "rtml/feature_table.h"
#include "rtml/forest.h"
#include "rtml/scorer.h"
#include "rtml/window.h"
#include "rtml/wire.h"

namespace rtml::server {

// How a table field's values are checked and stored (as the Python API does).
enum class FieldKind : uint8_t { kFloat64 = 0, kFloat32 = 1, kInteger = 2 };

struct EngineConfig {
  wire::Limits limits;
  uint32_t max_in_flight = 256;  // frames handled per read batch; advertised in HELLO
  std::string token;             // empty: no HELLO required
  bool admin = false;            // MODEL_LOAD / MODEL_SWAP allowed
  std::string server_name = "rtml";
};

class Engine {
 public:
  explicit Engine(EngineConfig config);
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const EngineConfig& config() const { return config_; }

  // Registry. Pointers must outlive the engine or their removal; the caller
  // (rtml.server.Server) keeps the owning objects alive. Set* replaces an
  // entry of the same name.
  // observer (may be null) records each score's metrics, as in-process calls do.
  void SetScorer(const std::string& name, const Scorer* scorer, ScoreObserver* observer);
  void SetModel(const std::string& name, std::shared_ptr<const Forest> model);
  // max_future_ns: how far ahead of the clock an event time may be.
  void SetTable(const std::string& name, FeatureTable* table, std::vector<FieldKind> fields,
                int64_t max_future_ns);
  void SetWindows(const std::string& name, WindowTable* windows, int64_t max_future_ns);
  bool RemoveModel(const std::string& name);

  // Stops new work: frames that arrive from now on are answered SHUTTING_DOWN.
  void BeginDrain() noexcept { draining_.store(true, std::memory_order_relaxed); }
  bool draining() const noexcept { return draining_.load(std::memory_order_relaxed); }

  // Counters over all sessions.
  struct Counters {
    uint64_t frames = 0;
    uint64_t errors = 0;    // error responses sent
    uint64_t deferred = 0;  // frames left to the caller
    uint64_t fatal = 0;     // connections closed for a fatal error
  };
  Counters counters() const noexcept;

 private:
  friend class Session;
  struct ScorerEntry {
    std::string name;
    const Scorer* scorer;
    ScoreObserver* observer;
  };
  struct ModelEntry {
    std::string name;
    std::shared_ptr<const Forest> model;
  };
  struct TableEntry {
    std::string name;
    FeatureTable* table;
    std::vector<FieldKind> fields;
    int64_t max_future_ns;
  };
  struct WindowEntry {
    std::string name;
    WindowTable* windows;
    int64_t max_future_ns;
  };
  template <typename T>
  void Put(std::vector<T>* entries, T entry);
  template <typename T>
  static const T* Find(const std::vector<T>& v, std::string_view name) noexcept {
    for (const T& e : v) {
      if (e.name == name) return &e;
    }
    return nullptr;
  }

  EngineConfig config_;
  mutable std::shared_mutex mu_;  // guards the vectors below
  std::vector<ScorerEntry> scorers_;
  std::vector<ModelEntry> models_;
  std::vector<TableEntry> tables_;
  std::vector<WindowEntry> windows_;
  std::atomic<bool> draining_{false};
  std::atomic<uint64_t> frames_{0}, errors_{0}, deferred_{0}, fatal_{0};
};

// One connection's protocol state and buffers.
class Session {
 public:
  enum class Action : uint8_t {
    kContinue = 0,  // all complete frames handled (or max_frames reached): read more
    kDefer = 1,     // the frame at consumed is the caller's (see deferred())
    kClose = 2,     // flush the output, then close: the stream cannot be trusted
  };
  struct Result {
    size_t consumed = 0;  // bytes of in that were handled (whole frames)
    size_t frames = 0;    // frames handled
    Action action = Action::kContinue;
  };

  explicit Session(Engine* engine);

  // Handles up to max_frames complete frames at the front of in[0, n) and
  // appends their responses to out(). Never throws: an internal failure is
  // answered INTERNAL and closes the connection.
  Result Handle(const uint8_t* in, size_t n, size_t max_frames) noexcept;

  // The frame Handle deferred (valid until the next Handle; payload points into
  // the caller's buffer).
  const wire::Frame& deferred() const noexcept { return deferred_; }
  // Whether this session presented the server's token (or none is required).
  bool authorized() const noexcept { return authorized_; }

  const std::string& out() const noexcept { return out_; }
  void ClearOut() noexcept { out_.clear(); }
  void AppendOut(const uint8_t* p, size_t n) { out_.append(reinterpret_cast<const char*>(p), n); }

 private:
  // Serves f and, for SCORE / PREDICT, the frames after it that join its run
  // (moving split past them, at most budget in all); returns how many frames
  // it answered, 0 when f is the caller's (STATS, MODEL_LOAD, MODEL_SWAP).
  size_t Serve(const wire::Frame& f, wire::FrameSplitter* split, size_t budget);
  void Error(const wire::Frame& f, wire::Code code, std::string_view message);
  template <typename Encode>
  void Append(Encode&& encode);

  void Hello(const wire::Frame& f);
  void Ping(const wire::Frame& f);
  const Engine::ScorerEntry* CheckScore(const wire::Frame& f, wire::ScoreRequest* req);
  // Scores first and the SCORE frames right after it in the buffer that share
  // its scorer and time (at most budget, kMaxScoreRun) with one ScoreMany;
  // moves split past them and returns how many frames it answered.
  size_t ScoreRun(const wire::Frame& first, wire::FrameSplitter* split, size_t budget);
  // The same for PREDICT frames of one model, dtype and width (rows stacked,
  // at most kMaxPredictRows, one Forest::Predict).
  size_t PredictRun(const wire::Frame& first, wire::FrameSplitter* split, size_t budget);
  bool DecodeRunSlot(const wire::Frame& f, const Engine::ScorerEntry* e, size_t i, wire::ScoreRequest* req);
  void ScoreBatch(const wire::Frame& f);
  void Predict(const wire::Frame& f);
  void GetFeatures(const wire::Frame& f);
  void PutFeatures(const wire::Frame& f);
  void Ingest(const wire::Frame& f);
  template <typename Req, typename Decode>
  bool DecodeKeyed(const wire::Frame& f, const char* op, Decode decode, Req* req);
  template <typename T>
  const T* Lookup(const wire::Frame& f, const std::vector<T>& entries, std::string_view name, const char* what);
  bool KeyKindsMatch(const wire::Frame& f, const Key* keys, size_t n, KeyKind kind, std::string_view what);
  bool TimesInRange(const wire::Frame& f, const int64_t* event_ns, size_t n, int64_t max_future_ns,
                    std::string_view what);

  Engine* engine_;
  bool authorized_ = false;
  bool closing_ = false;
  wire::Frame deferred_;
  std::string out_;
  // Scratch grown to the largest request seen (never shrunk).
  std::vector<Key> keys_;
  std::vector<double> doubles_;
  std::vector<double> outputs_;
  std::vector<int64_t> times_;
  std::vector<uint8_t> bytes_;
  std::vector<TableStatus> statuses_;
  std::vector<Key> run_keys_;  // a SCORE run's keys, row-major
  std::vector<double> run_fields_;
  std::vector<wire::Frame> run_frames_;
  std::vector<uint32_t> run_rows_;  // a PREDICT run's rows per frame
  std::vector<double> run_x_;       // a PREDICT run's rows (float32 or float64), aligned
  static constexpr size_t kMaxScoreRun = 256;
  static constexpr size_t kMaxPredictRows = 4096;
};

}  // namespace rtml::server

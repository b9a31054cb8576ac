// rtml::Scorer: one model bound to its inputs. A request names its entity keys
// and carries its own fields; the scorer gathers each model feature from the
// request, a feature table or a window set, evaluates the model, and counts.
//
// Plan: built once. Each model feature is an InputSource; features read from
// the same (table, key) or (window set, key) share one lookup per request.
// Missing or expired stored features become NaN (the model's default
// direction) and are counted per feature.
//
// Models: a ScorerConfig (primary model, optional shadow, or A/B arms routed by a
// stable hash of one request key) is immutable and published by pointer.
// Readers enter an epoch (one counter increment), load the pointer, and leave;
// SetConfig publishes a new ScorerConfig, then waits until every reader that could
// hold the old one has left (two epoch flips, so a steady stream of new readers
// cannot starve it) and frees it. No lock on the scoring path.
//
// Thread-safety: Score/ScoreMany from any number of threads; SetConfig from
// any thread (serialized). Progress: scoring is lock-free (its only waits are
// seqlock retries of the store); SetConfig blocks until old readers leave.
// Cost: per request, one lookup per (source, key) group plus one model walk.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "rtml/feature_table.h"
#include "rtml/forest.h"
#include "rtml/window.h"

namespace rtml {

struct InputSource {
  enum class Kind : uint8_t { kRequest = 0, kTable = 1, kWindow = 2 };
  Kind kind = Kind::kRequest;
  uint32_t source = 0;  // request field index, or index into tables / windows
  uint32_t column = 0;  // field of the table, or column of the window set
  uint32_t key = 0;     // which request key looks the entity up
};

struct ScorerPlan {
  std::vector<InputSource> inputs;  // one per model feature, in model order
  std::vector<const FeatureTable*> tables;
  std::vector<const WindowTable*> windows;
  std::vector<KeyKind> keys;  // kind of each request key
  uint32_t num_fields = 0;    // request fields
};

// Models a Scorer runs. Arms, when present, replace the primary: request r
// goes to the first arm whose cumulative weight exceeds hash(key route_key) in
// [0, 1).
struct ScorerConfig {
  struct Arm {
    std::string name;
    std::shared_ptr<const Forest> model;
    std::string version;
    double cumulative = 1.0;
  };
  std::vector<Arm> arms;  // one arm = no A/B
  std::shared_ptr<const Forest> shadow;
  std::string shadow_version;
  uint32_t route_key = 0;
};

// Per-request result details (optional outputs of Score).
struct ScoreTrace {
  double* row = nullptr;       // num_features: the assembled feature vector
  double* age_s = nullptr;     // num_features: age of stored features (NaN otherwise)
  uint8_t* found = nullptr;    // num_features: 1 when present (request fields: 1)
  int32_t arm = -1;            // the arm that scored
  double shadow = 0.0;         // the shadow model's first output (NaN without one)
};

// Hooks the scorer calls (metrics, drift); implemented by the caller, and
// called from every scoring thread, so thread-safe and noexcept.
class ScoreObserver {
 public:
  virtual ~ScoreObserver() = default;
  // Each scored row: its request keys and time, its arm, assembled features,
  // per-feature missing flags (1 = a stored feature was absent or expired),
  // per-feature age in seconds of stored table features (NaN otherwise), the
  // arm's outputs, and the shadow's outputs (nullptr without a shadow).
  virtual void OnRow(const Key* keys, int64_t now_ns, int32_t arm, const double* row, const uint8_t* missing,
                     const double* age_s, const double* out, const double* shadow_out) noexcept = 0;
  // Each call: rows scored, wall time of the whole call, whether it failed.
  virtual void OnCall(bool batch, size_t rows, int64_t latency_ns, bool failed) noexcept = 0;
};

class Scorer {
 public:
  // Validates the plan against the config's models (feature counts, sources in
  // range, arms' outputs equal); throws InputError naming what does not fit.
  Scorer(ScorerPlan plan, ScorerConfig config);
  ~Scorer();
  Scorer(const Scorer&) = delete;
  Scorer& operator=(const Scorer&) = delete;

  const ScorerPlan& plan() const { return plan_; }
  int32_t num_features() const { return static_cast<int32_t>(plan_.inputs.size()); }
  int32_t num_outputs() const { return num_outputs_; }

  // Scores one request: keys[plan.keys.size()], fields[plan.num_fields];
  // out[num_outputs()]. Status kBadShape if the model refused the row (inputs
  // the native library rejects, e.g. inf for scikit-learn).
  Status Score(const Key* keys, const double* fields, int64_t now_ns, double* out,
               ScoreTrace* trace = nullptr, ScoreObserver* observer = nullptr) const noexcept;

  // n requests: keys row-major [n][num keys], fields [n][num_fields],
  // out [n][num_outputs()]; arms[n] receives each row's arm when not null.
  // Returns the first failing row's status (rows after it are still scored).
  Status ScoreMany(const Key* keys, const double* fields, size_t n, int64_t now_ns, double* out,
                   int32_t* arms = nullptr, ScoreObserver* observer = nullptr) const noexcept;

  // Publishes a new config (validated first: throws InputError and keeps the
  // old one when it does not fit) and frees the old one once no reader holds it.
  void SetConfig(ScorerConfig config);
  // A copy of the current config.
  ScorerConfig config() const;

 private:
  struct Group {  // lookups that share one (source, key)
    InputSource::Kind kind;
    uint32_t source;
    uint32_t key;
    std::vector<std::pair<uint32_t, uint32_t>> columns;  // (source column, feature)
  };
  void Validate(const ScorerConfig& c) const;
  // Gathers one request's features into row; missing[f] = 1 for stored
  // features not found. Returns the number missing.
  void Gather(const Key* keys, const double* fields, int64_t now_ns, double* row, uint8_t* missing,
              double* age_s, double* scratch) const noexcept;
  int32_t Route(const ScorerConfig& c, const Key* keys) const noexcept;
  void Prefetch(const Key* keys, int64_t now_ns) const noexcept;  // a later row's lookups
  const ScorerConfig* Enter(uint64_t* parity) const noexcept;
  void Leave(uint64_t parity) const noexcept;

  ScorerPlan plan_;
  std::vector<Group> groups_;
  size_t scratch_size_ = 0;
  int32_t num_outputs_ = 0;
  std::atomic<const ScorerConfig*> current_{nullptr};
  mutable std::atomic<uint64_t> epoch_{0};
  struct alignas(64) ReaderCount {
    std::atomic<int64_t> n{0};
  };
  mutable ReaderCount readers_[2];
  std::mutex set_mu_;
};

}  // namespace rtml

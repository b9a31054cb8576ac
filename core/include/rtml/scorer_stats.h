// rtml::ScorerStats: the ScoreObserver that keeps a Scorer's online metrics
// (latency per operation, requests, errors, rows, missing features, feature
// age, score histograms per arm and for the shadow, shadow divergence) and
// feeds its drift monitor.
//
// Thread-safety and progress: OnRow/OnCall run on every scoring thread; they
// only touch wait-free counters and histograms (rtml/metrics.h) and the
// lock-free DriftMonitor. SetDrift publishes a monitor by pointer; replaced
// monitors are kept until the stats object dies, so a scoring thread never
// reads a freed one. Cost per row: a few relaxed atomic adds per arm, one per
// (table, key) group for feature age, one per missing feature, plus the drift
// monitor's Observe when one is set (sampled by its sample_every).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "rtml/drift.h"
#include "rtml/metrics.h"
#include "rtml/scorer.h"
#include "rtml/serving_log.h"

namespace rtml {

// An object the scoring threads read by pointer while a control thread may
// replace it: every object ever set is kept until the owner dies, so a reader
// never sees a freed one (replacements are rare: a new reference or log).
template <typename T>
class Published {
 public:
  // Acquire pairs with Set's release: the object is fully built.
  T* get() const noexcept { return p_.load(std::memory_order_acquire); }
  void Set(std::shared_ptr<T> v) {
    std::lock_guard<std::mutex> lock(mu_);
    if (v) kept_.push_back(v);
    p_.store(v.get(), std::memory_order_release);
  }
  std::shared_ptr<T> shared() const {
    std::lock_guard<std::mutex> lock(mu_);
    const T* cur = get();
    for (const auto& k : kept_) {
      if (k.get() == cur) return k;
    }
    return nullptr;
  }

 private:
  std::atomic<T*> p_{nullptr};
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<T>> kept_;
};

class ScorerStats final : public ScoreObserver {
 public:
  // features: model feature names; age_of[f]: index of the feature-age
  // histogram feature f reads (-1 when f has no age: request fields, windows);
  // age_from[h]: the feature whose age histogram h records (one per group).
  // arms: number of A/B arms. score_edges: bins of the score histograms.
  // score_column: which output is "the score" (e.g. 1 for P(class 1)).
  ScorerStats(std::vector<std::string> features, std::vector<int32_t> age_of, std::vector<int32_t> age_from,
              size_t arms, std::vector<double> score_edges, int32_t score_column);

  void OnRow(const Key* keys, int64_t now_ns, int32_t arm, const double* row, const uint8_t* missing,
             const double* age_s, const double* out, const double* shadow_out) noexcept override;
  void OnCall(bool batch, size_t rows, int64_t latency_ns, bool failed) noexcept override;

  // Publishes a drift monitor / serving log (nullptr: none); throws
  // InputError when it does not watch the scorer's number of features.
  void SetDrift(std::shared_ptr<DriftMonitor> drift);
  std::shared_ptr<DriftMonitor> drift() const { return drift_.shared(); }
  void SetLog(std::shared_ptr<ServingLog> log);
  std::shared_ptr<ServingLog> log() const { return log_.shared(); }

  const std::vector<std::string>& features() const { return features_; }
  const std::vector<int32_t>& age_of() const { return age_of_; }
  size_t arms() const { return arm_rows.size(); }

  Counter requests, errors, rows;
  LatencyHistogram score_latency, score_many_latency;
  CounterArray missing;
  std::vector<std::unique_ptr<LatencyHistogram>> ages;  // per group, ns
  std::vector<std::unique_ptr<Counter>> arm_rows;
  std::vector<std::unique_ptr<ValueHistogram>> arm_scores;
  Counter shadow_rows;
  std::unique_ptr<ValueHistogram> shadow_scores;
  std::unique_ptr<ValueHistogram> divergence;  // |primary - shadow| of the score column

 private:
  std::vector<std::string> features_;
  std::vector<int32_t> age_of_, age_from_;
  int32_t score_column_;
  Published<DriftMonitor> drift_;
  Published<ServingLog> log_;
};

}  // namespace rtml

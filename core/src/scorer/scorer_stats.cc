// rtml::ScorerStats (see rtml/scorer_stats.h).
#include "rtml/scorer_stats.h"

#include <cmath>

namespace rtml {

namespace {

std::vector<double> DivergenceEdges() {
  // 0, then 1e-9 .. 1e3 in quarter decades: differences span many scales.
  std::vector<double> e{0.0};
  for (int i = -36; i <= 12; ++i) e.push_back(std::pow(10.0, i / 4.0));
  return e;
}

}  // namespace

ScorerStats::ScorerStats(std::vector<std::string> features, std::vector<int32_t> age_of,
                         std::vector<int32_t> age_from, size_t arms, std::vector<double> score_edges,
                         int32_t score_column)
    : missing(features),
      features_(std::move(features)),
      age_of_(std::move(age_of)),
      age_from_(std::move(age_from)),
      score_column_(score_column) {
  if (age_of_.size() != features_.size()) throw InputError("age_of must hold one entry per feature");
  for (int32_t f : age_from_) {
    if (f < 0 || static_cast<size_t>(f) >= features_.size()) throw InputError("age_from: feature out of range");
  }
  for (int32_t h : age_of_) {
    if (h >= static_cast<int32_t>(age_from_.size())) throw InputError("age_of: histogram out of range");
  }
  for (size_t h = 0; h < age_from_.size(); ++h) ages.push_back(std::make_unique<LatencyHistogram>());
  for (size_t a = 0; a < arms; ++a) {
    arm_rows.push_back(std::make_unique<Counter>());
    arm_scores.push_back(std::make_unique<ValueHistogram>(score_edges));
  }
  shadow_scores = std::make_unique<ValueHistogram>(score_edges);
  divergence = std::make_unique<ValueHistogram>(DivergenceEdges());
}

void ScorerStats::OnRow(const Key* keys, int64_t now_ns, int32_t arm, const double* row,
                        const uint8_t* missing_flags, const double* age_s, const double* out,
                        const double* shadow_out) noexcept {
  const size_t nf = features_.size();
  for (size_t f = 0; f < nf; ++f) {
    if (missing_flags[f]) missing.Add(f);
  }
  if (age_s != nullptr) {
    for (size_t h = 0; h < age_from_.size(); ++h) {
      const double a = age_s[age_from_[h]];
      if (!std::isnan(a)) ages[h]->Record(static_cast<int64_t>(a * 1e9));
    }
  }
  const double score = out[score_column_];
  if (arm >= 0 && static_cast<size_t>(arm) < arm_rows.size()) {
    arm_rows[static_cast<size_t>(arm)]->Add();
    arm_scores[static_cast<size_t>(arm)]->Record(score);
  }
  if (shadow_out != nullptr) {
    shadow_rows.Add();
    shadow_scores->Record(shadow_out[score_column_]);
    const double d = std::fabs(score - shadow_out[score_column_]);
    divergence->Record(std::isnan(d) ? d : std::min(d, 1e3));
  }
  if (ServingLog* log = log_.get()) log->Append(keys, now_ns, arm, score, row);
  if (DriftMonitor* drift = drift_.get()) {
    // The monitor bins float32 rows; a thread's buffer is sized once.
    thread_local std::vector<float> x;
    if (x.size() < nf) x.resize(nf);
    for (size_t f = 0; f < nf; ++f) x[f] = static_cast<float>(row[f]);
    (void)drift->Observe(x.data(), nf, score);
  }
}

void ScorerStats::OnCall(bool batch, size_t n, int64_t latency_ns, bool failed) noexcept {
  requests.Add();
  rows.Add(n);
  if (failed) errors.Add();
  (batch ? score_many_latency : score_latency).Record(latency_ns);
}

void ScorerStats::SetDrift(std::shared_ptr<DriftMonitor> drift) {
  if (drift && drift->num_features() != features_.size()) {
    throw InputError("drift monitor watches " + std::to_string(drift->num_features()) + " features; the scorer has " +
                     std::to_string(features_.size()));
  }
  drift_.Set(std::move(drift));
}

void ScorerStats::SetLog(std::shared_ptr<ServingLog> log) {
  if (log && log->num_features() != features_.size()) throw InputError("serving log: feature count differs");
  log_.Set(std::move(log));
}

}  // namespace rtml

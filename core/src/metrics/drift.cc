// rtml::DriftMonitor (see rtml/drift.h for the contract).
#include "rtml/drift.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <limits>
#include <string>
#include <thread>

namespace rtml {
namespace drift_internal {
namespace {

// Increments of a cell of a stripe this thread owns: the owner flag's
// acquire/release orders them against other owners, so a plain load + store
// (no locked instruction) cannot lose a count.
struct OwnedInc {
  static void Add(std::atomic<uint64_t>& c) noexcept {
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
};

// Increments of the shared stripe, which any number of threads count into.
struct SharedInc {
  static void Add(std::atomic<uint64_t>& c) noexcept { c.fetch_add(1, std::memory_order_relaxed); }
};

// A thread's home stripe; consecutive threads get consecutive stripes.
uint32_t ThreadOrdinal() noexcept {
  static std::atomic<uint32_t> next{0};
  thread_local const uint32_t mine = next.fetch_add(1, std::memory_order_relaxed);
  return mine;
}

// Four lanes of floats / int32 (GCC and Clang vector extensions: SSE2 on
// x86-64, NEON on aarch64, wider when the compiler may use more).
typedef float V4f __attribute__((vector_size(16)));
typedef int32_t V4i __attribute__((vector_size(16)));

inline V4f Load4(const float* p) noexcept {
  V4f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// The smallest float32 f with f >= e, so x >= f <=> double(x) >= e for every float32 x.
float RoundEdgeUp(double e) noexcept {
  if (e > static_cast<double>(FLT_MAX)) return std::numeric_limits<float>::infinity();
  if (e < -static_cast<double>(FLT_MAX)) return -FLT_MAX;
  float f = static_cast<float>(e);
  if (static_cast<double>(f) < e) f = std::nextafter(f, std::numeric_limits<float>::infinity());
  return f;
}

void CheckBins(const DriftBins& b, const std::string& what) {
  for (size_t j = 0; j < b.edges.size(); ++j) {
    if (!std::isfinite(b.edges[j])) {
      throw InputError(what + ": edge " + std::to_string(j) + " is " + std::to_string(b.edges[j]) +
                       ", expected a finite number");
    }
    if (j > 0 && !(b.edges[j] > b.edges[j - 1])) {
      throw InputError(what + ": edges must be strictly increasing, edge " + std::to_string(j) + " (" +
                       std::to_string(b.edges[j]) + ") follows " + std::to_string(b.edges[j - 1]));
    }
  }
  if (b.reference.size() != b.edges.size() + 2) {
    throw InputError(what + ": expected " + std::to_string(b.edges.size() + 2) +
                     " reference proportions (edges + 1 value bins, then missing), got " +
                     std::to_string(b.reference.size()));
  }
  double sum = 0;
  for (size_t i = 0; i < b.reference.size(); ++i) {
    const double r = b.reference[i];
    if (!std::isfinite(r) || r < 0) {
      throw InputError(what + ": reference proportion " + std::to_string(i) + " is " + std::to_string(r) +
                       ", expected a finite number >= 0");
    }
    sum += r;
  }
  if (std::fabs(sum - 1.0) > 1e-6) {
    throw InputError(what + ": reference proportions sum to " + std::to_string(sum) + ", expected 1");
  }
}

// PSI of live counts against reference proportions, both floored at kPsiEpsilon.
double PsiOf(const std::vector<uint64_t>& counts, const double* ref) noexcept {
  uint64_t n = 0;
  for (const uint64_t c : counts) n += c;
  if (n == 0) return std::numeric_limits<double>::quiet_NaN();
  double psi = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double a = std::max(static_cast<double>(counts[i]) / static_cast<double>(n), kPsiEpsilon);
    const double r = std::max(ref[i], kPsiEpsilon);
    psi += (a - r) * std::log(a / r);
  }
  return psi;
}

}  // namespace
}  // namespace drift_internal

using drift_internal::OwnedInc;
using drift_internal::SharedInc;

DriftLevel LevelOfPsi(double psi) noexcept {
  if (psi >= kPsiSignificant) return DriftLevel::kSignificant;
  if (psi >= kPsiModerate) return DriftLevel::kModerate;
  return DriftLevel::kNone;
}

const char* DriftLevelName(DriftLevel level) noexcept {
  switch (level) {
    case DriftLevel::kModerate:
      return "moderate";
    case DriftLevel::kSignificant:
      return "significant";
    case DriftLevel::kNone:
      break;
  }
  return "none";
}

DriftMonitor::DriftMonitor(const DriftSpec& spec) {
  constexpr size_t kMaxEdges = 1u << 16;
  n_features_ = spec.features.size();
  has_score_ = !spec.score.reference.empty();
  if (n_features_ == 0 && !has_score_) throw InputError("drift monitor: no features and no score to monitor");
  if (spec.sample_every < 1) throw InputError("drift monitor: sample_every must be >= 1, got 0");
  if (spec.stripes > 1024) {
    throw InputError("drift monitor: stripes must be <= 1024, got " + std::to_string(spec.stripes));
  }
  uint32_t max_edges = 0;
  for (size_t f = 0; f < n_features_; ++f) {
    const std::string what = "feature " + std::to_string(f);
    drift_internal::CheckBins(spec.features[f], what);
    if (spec.features[f].edges.size() > kMaxEdges) {
      throw InputError(what + ": " + std::to_string(spec.features[f].edges.size()) + " edges, at most " +
                       std::to_string(kMaxEdges));
    }
    max_edges = std::max(max_edges, static_cast<uint32_t>(spec.features[f].edges.size()));
  }
  if (has_score_) {
    drift_internal::CheckBins(spec.score, "score");
  } else if (!spec.score.edges.empty()) {
    throw InputError("score: " + std::to_string(spec.score.edges.size()) + " edges but no reference proportions");
  }

  // Edges transposed, [edge][feature], so that one vector compare tests one
  // edge of 4 features; a feature with fewer edges is padded with NaN, which
  // no x is >= to, so its count stays exact.
  max_edges_ = max_edges;
  lanes_ = (n_features_ + 7) / 8 * 8;
  width_ = max_edges_ + 2;
  edges_t_.assign(static_cast<size_t>(max_edges_) * lanes_, std::numeric_limits<float>::quiet_NaN());
  n_edges_.resize(n_features_);
  feature_ref_.assign(n_features_ * width_, 0.0);
  for (size_t f = 0; f < n_features_; ++f) {
    const DriftBins& b = spec.features[f];
    n_edges_[f] = static_cast<uint32_t>(b.edges.size());
    for (size_t j = 0; j < b.edges.size(); ++j) edges_t_[j * lanes_ + f] = drift_internal::RoundEdgeUp(b.edges[j]);
    // Same layout as the cells: value bins from 0, missing in the last cell.
    for (size_t i = 0; i + 1 < b.reference.size(); ++i) feature_ref_[f * width_ + i] = b.reference[i];
    feature_ref_[f * width_ + width_ - 1] = b.reference.back();
  }
  if (has_score_) {
    score_edges_ = spec.score.edges;
    score_ref_ = spec.score.reference;
    score_slots_ = static_cast<uint32_t>(score_edges_.size() + 2);
  }
  sample_every_ = spec.sample_every;
  // A power of two, so that picking a stripe is a mask, not a division.
  uint32_t want = spec.stripes;
  if (want == 0) want = std::clamp<uint32_t>(2 * std::max(1u, std::thread::hardware_concurrency()), 2, 64);
  n_stripes_ = 1;
  while (n_stripes_ < want) n_stripes_ *= 2;
  const size_t cells = n_features_ * width_ + score_slots_;
  if (cells > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    throw InputError("drift monitor: " + std::to_string(n_features_) + " features x " + std::to_string(width_) +
                     " bins is too many cells");
  }
  stride_cells_ = (cells + 7) / 8 * 8;
  ctl_.reset(new StripeCtl[n_stripes_ + 1]);
  const size_t total = (n_stripes_ + 1) * stride_cells_ + 8;
  cell_store_.reset(new std::atomic<uint64_t>[total]);
  for (size_t i = 0; i < total; ++i) cell_store_[i].store(0, std::memory_order_relaxed);
  // Stripes start on cache-line boundaries so two owners never share a line.
  const auto addr = reinterpret_cast<uintptr_t>(cell_store_.get());
  cells_ = cell_store_.get() + ((64 - addr % 64) % 64) / sizeof(std::atomic<uint64_t>);
  base_cells_.assign(stride_cells_, 0);
}

DriftMonitor::~DriftMonitor() = default;

std::vector<float> DriftMonitor::FeatureEdges(size_t f) const {
  if (f >= n_features_) throw InputError("feature " + std::to_string(f) + " out of range");
  std::vector<float> out(n_edges_[f]);
  for (size_t j = 0; j < out.size(); ++j) out[j] = edges_t_[j * lanes_ + f];
  return out;
}

uint32_t DriftMonitor::ScoreBin(double s) const noexcept {
  if (s != s) return score_slots_ - 1;
  uint32_t c = 0;
  for (const double e : score_edges_) c += static_cast<uint32_t>(s >= e);
  return c;
}

template <class Inc>
void DriftMonitor::CountRows(const float* rows, size_t n_rows, size_t stride, const double* scores, size_t first,
                             size_t step, std::atomic<uint64_t>* cells) const noexcept {
  using drift_internal::Load4;
  using drift_internal::V4f;
  using drift_internal::V4i;
  const float* edges = edges_t_.data();
  const size_t n_features = n_features_;
  const size_t lanes = lanes_;
  const uint32_t n_edges = max_edges_;
  const int32_t w = static_cast<int32_t>(width_);
  const V4i missing = {w - 1, w - 1, w - 1, w - 1};
  const V4i lane_base = {0, w, 2 * w, 3 * w};
  const V4i next4 = {4 * w, 4 * w, 4 * w, 4 * w};
  std::atomic<uint64_t>* score_cells = cells + n_features * width_;
  const bool with_score = has_score_ && scores != nullptr;
  for (size_t i = first; i < n_rows; i += step) {
    const float* row = rows + i * stride;
    // 8 features a step as two independent 4-lane chains; the last step reads
    // a padded copy so that it never reads past the row (pad lanes are never counted).
    for (size_t f = 0; f < n_features; f += 8) {
      V4f x0;
      V4f x1;
      if (f + 8 <= n_features) {
        x0 = Load4(row + f);
        x1 = Load4(row + f + 4);
      } else {
        float tail[8];
        for (size_t l = 0; l < 8; ++l) tail[l] = f + l < n_features ? row[f + l] : 0.0f;
        x0 = Load4(tail);
        x1 = Load4(tail + 4);
      }
      V4i c0 = {0, 0, 0, 0};
      V4i c1 = {0, 0, 0, 0};
      const float* e = edges + f;
      for (uint32_t j = 0; j < n_edges; ++j, e += lanes) {
        c0 -= x0 >= Load4(e);  // a true compare is -1
        c1 -= x1 >= Load4(e + 4);
      }
      // NaN fails every compare (count 0) and goes to the missing cell.
      const V4i nan0 = x0 != x0;
      const V4i nan1 = x1 != x1;
      const V4i base = lane_base + static_cast<int32_t>(f) * w;
      c0 = ((c0 & ~nan0) | (missing & nan0)) + base;
      c1 = ((c1 & ~nan1) | (missing & nan1)) + base + next4;
      int32_t idx[8];
      std::memcpy(idx, &c0, sizeof(c0));
      std::memcpy(idx + 4, &c1, sizeof(c1));
      const size_t n = std::min<size_t>(8, n_features - f);
      for (size_t l = 0; l < n; ++l) Inc::Add(cells[idx[l]]);
    }
    if (with_score) Inc::Add(score_cells[ScoreBin(scores[i])]);
  }
}

bool DriftMonitor::TryOwn(uint32_t stripe) noexcept {
  std::atomic<bool>& busy = ctl_[stripe].busy;
  // The acquire pairs with the previous owner's release in ObserveMany, so
  // this owner's loads see that owner's last stores to the cells.
  return !busy.load(std::memory_order_relaxed) && !busy.exchange(true, std::memory_order_acquire);
}

Status DriftMonitor::Observe(const float* row, size_t n_features, double score) noexcept {
  if (n_features != n_features_) return Status::kBadShape;
  return ObserveMany(row, 1, n_features_, &score);
}

Status DriftMonitor::ObserveMany(const float* rows, size_t n_rows, size_t stride, const double* scores) noexcept {
  if (stride < n_features_) return Status::kBadShape;
  if (n_rows == 0) return Status::kOk;
  const size_t k = sample_every_;
  const uint32_t mask = n_stripes_ - 1;
  const uint32_t home = drift_internal::ThreadOrdinal() & mask;
  // A single row tries two stripes, a batch all of them: a batch amortizes
  // the tries, a row would rather take the shared stripe than probe on.
  const uint32_t tries = n_rows == 1 ? std::min<uint32_t>(2, n_stripes_) : n_stripes_;
  for (uint32_t t = 0; t < tries; ++t) {
    const uint32_t s = (home + t) & mask;
    if (!TryOwn(s)) continue;
    StripeCtl& ctl = ctl_[s];
    const size_t skip = ctl.skip.load(std::memory_order_relaxed);
    size_t counted = 0;
    size_t next_skip = 0;
    if (skip >= n_rows) {
      next_skip = skip - n_rows;
    } else if (n_rows == 1) {  // skip == 0: no division on the one-row path
      counted = 1;
      next_skip = k - 1;
    } else {
      counted = (n_rows - 1 - skip) / k + 1;
      next_skip = skip + counted * k - n_rows;
    }
    if (counted != 0) CountRows<OwnedInc>(rows, n_rows, stride, scores, skip, k, Cells(s));
    ctl.skip.store(static_cast<uint32_t>(next_skip), std::memory_order_relaxed);
    ctl.ticks.store(ctl.ticks.load(std::memory_order_relaxed) + n_rows, std::memory_order_relaxed);
    ctl.observed.store(ctl.observed.load(std::memory_order_relaxed) + counted, std::memory_order_relaxed);
    // Pairs with the acquire in the next owner's TryOwn.
    ctl.busy.store(false, std::memory_order_release);
    return Status::kOk;
  }
  StripeCtl& shared = ctl_[n_stripes_];
  const uint64_t tick0 = shared.ticks.fetch_add(n_rows, std::memory_order_relaxed);
  const size_t first = static_cast<size_t>((k - tick0 % k) % k);
  if (first < n_rows) {
    shared.observed.fetch_add((n_rows - 1 - first) / k + 1, std::memory_order_relaxed);
    CountRows<SharedInc>(rows, n_rows, stride, scores, first, k, Cells(n_stripes_));
  }
  return Status::kOk;
}

void DriftMonitor::Totals(std::vector<uint64_t>* cells, uint64_t* ticks, uint64_t* observed) const {
  cells->assign(stride_cells_, 0);
  *ticks = 0;
  *observed = 0;
  for (uint32_t s = 0; s <= n_stripes_; ++s) {
    const std::atomic<uint64_t>* c = Cells(s);
    for (size_t i = 0; i < stride_cells_; ++i) (*cells)[i] += c[i].load(std::memory_order_relaxed);
    *ticks += ctl_[s].ticks.load(std::memory_order_relaxed);
    *observed += ctl_[s].observed.load(std::memory_order_relaxed);
  }
}

DriftReport DriftMonitor::Psi() const {
  std::vector<uint64_t> cells;
  uint64_t ticks = 0;
  uint64_t observed = 0;
  DriftReport r;
  {
    std::lock_guard<std::mutex> lock(control_mu_);
    Totals(&cells, &ticks, &observed);
    // Each cell only grows and base_ was read before under this mutex, so
    // these differences never wrap.
    for (size_t i = 0; i < cells.size(); ++i) cells[i] -= base_cells_[i];
    r.rows_seen = ticks - base_ticks_;
    r.rows_observed = observed - base_observed_;
  }
  r.feature_psi.resize(n_features_);
  r.feature_counts.resize(n_features_);
  std::vector<double> ref;
  for (size_t f = 0; f < n_features_; ++f) {
    const uint32_t n = n_edges_[f] + 2;
    const uint64_t* c = cells.data() + f * width_;
    const double* fr = feature_ref_.data() + f * width_;
    auto& counts = r.feature_counts[f];
    counts.assign(c, c + n - 1);
    counts.push_back(c[width_ - 1]);
    ref.assign(fr, fr + n - 1);
    ref.push_back(fr[width_ - 1]);
    r.feature_psi[f] = drift_internal::PsiOf(counts, ref.data());
  }
  if (has_score_) {
    const uint64_t* c = cells.data() + n_features_ * width_;
    r.score_counts.assign(c, c + score_slots_);
    r.score_psi = drift_internal::PsiOf(r.score_counts, score_ref_.data());
  } else {
    r.score_psi = std::numeric_limits<double>::quiet_NaN();
  }
  return r;
}

void DriftMonitor::Reset() {
  std::lock_guard<std::mutex> lock(control_mu_);
  Totals(&base_cells_, &base_ticks_, &base_observed_);
}

}  // namespace rtml

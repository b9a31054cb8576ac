// rtml::DriftMonitor: live population stability index (PSI) of every model
// input and of the score against a reference (training) distribution.
//
// Bins. Each feature has inner edges e_1 < ... < e_m (reference quantiles);
// value x falls in bin #{j : x >= e_j} (numpy.searchsorted(edges, x, "right")),
// so there are m + 1 value bins, the outer ones open-ended, plus one bin for
// NaN ("missing"), which is last. The score is binned the same way in double.
// Feature edges are kept as float32, rounded up: for every float32 x,
// x >= float_edge exactly when double(x) >= edge, so binning is exact.
//
// PSI. Live proportions a_i = count_i / rows and reference proportions r_i are
// each floored at kPsiEpsilon (1e-4) so that empty bins stay finite:
//   PSI = sum_i (a_i - r_i) * ln(a_i / r_i).
// Levels: < 0.1 none, [0.1, 0.25) moderate, >= 0.25 significant.
//
// Thread-safety and progress. Observe/ObserveMany may run on any number of
// threads at once and are lock-free (never wait): a call takes one of a few
// cache-aligned counter stripes by an exchange on its owner flag and then
// counts with plain (relaxed load + store) increments; when its stripes are
// all taken it counts into a shared stripe with relaxed fetch_add instead.
// Every observed row is counted exactly once. Psi and Reset are the
// control path: they serialize on a mutex with each other, never with the
// observers; a Psi during observation sees each counter at some recent value
// (a row being counted may be in some of its features and not yet in others).
// Reset starts a new live window by remembering the current totals: it never
// writes to the stripes, so it cannot lose a concurrent count.
//
// Cost. Observe compares a row 4 features at a time (SIMD, transposed edges)
// against each of the largest edge count's edges: O(features * max edges / 4)
// compares, then one increment per feature, one exchange and one release store;
// no allocation, no branch on the data. ObserveMany pays the exchange once a
// batch. Sampling (sample_every = k) counts every k-th row of each stripe, so a
// caller can bound the cost; with one thread that is exactly rows 0, k, 2k, ...
// Measured (benchmarks/cpp/drift_bench.cc, docs/drift.md): 30 features x 10
// bins + score, ~90-135 ns a row at one thread; ~11-33 ns with sample_every=10.
// Memory: (stripes + 1) * features * (max edges + 2) * 8 bytes.
// Limits: features and bins are fixed at creation; counts are uint64.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "rtml/error.h"

namespace rtml {

inline constexpr double kPsiEpsilon = 1e-4;
inline constexpr double kPsiModerate = 0.1;
inline constexpr double kPsiSignificant = 0.25;

enum class DriftLevel : uint8_t { kNone = 0, kModerate = 1, kSignificant = 2 };

// kNone for psi < 0.1 and for NaN (nothing observed yet).
DriftLevel LevelOfPsi(double psi) noexcept;
const char* DriftLevelName(DriftLevel level) noexcept;  // "none", "moderate", "significant"

// The reference distribution of one input: inner edges, strictly increasing and
// finite, and edges.size() + 2 proportions (value bins in order, then missing)
// that are finite, non-negative and sum to 1 (within 1e-6).
struct DriftBins {
  std::vector<double> edges;
  std::vector<double> reference;
};

struct DriftSpec {
  std::vector<DriftBins> features;  // one per model input, in row order
  DriftBins score;                  // an empty reference: the score is not monitored
  uint32_t sample_every = 1;        // count every k-th row (>= 1)
  uint32_t stripes = 0;             // rounded up to a power of two; 0: 2 x hardware threads, in [2, 64]
};

// Live state of one window, from Psi().
struct DriftReport {
  std::vector<double> feature_psi;                    // NaN while no row was observed
  double score_psi = 0;                               // NaN likewise, or when not monitored
  std::vector<std::vector<uint64_t>> feature_counts;  // edges + 2 per feature, missing last
  std::vector<uint64_t> score_counts;                 // empty when not monitored
  uint64_t rows_seen = 0;                             // offered, before sampling
  uint64_t rows_observed = 0;                         // counted
};

class DriftMonitor {
 public:
  // Throws InputError naming the offending input and value.
  explicit DriftMonitor(const DriftSpec& spec);
  ~DriftMonitor();
  DriftMonitor(const DriftMonitor&) = delete;
  DriftMonitor& operator=(const DriftMonitor&) = delete;

  // Hot path: noexcept, allocation-free, lock-free. Counts one row of
  // n_features float32 values (NaN = missing) and its score (NaN = missing;
  // ignored when the score is not monitored). kBadShape when n_features differs
  // from the spec's; nothing is counted then.
  Status Observe(const float* row, size_t n_features, double score) noexcept;

  // Hot path, as Observe for n_rows rows; row i starts at rows + i * stride
  // (stride in floats, >= num_features()). scores may be nullptr: the score is
  // then not counted (its bins stay as they are).
  Status ObserveMany(const float* rows, size_t n_rows, size_t stride, const double* scores) noexcept;

  // Control path (allocates, takes the control mutex).
  DriftReport Psi() const;
  void Reset();

  size_t num_features() const noexcept { return n_features_; }
  bool monitors_score() const noexcept { return has_score_; }
  uint32_t sample_every() const noexcept { return sample_every_; }
  uint32_t stripes() const noexcept { return n_stripes_; }
  // Inner edges of feature f as used for binning (float32, rounded up).
  std::vector<float> FeatureEdges(size_t f) const;

 private:
  struct alignas(64) StripeCtl {
    std::atomic<bool> busy{false};
    std::atomic<uint64_t> ticks{0};     // rows offered to this stripe
    std::atomic<uint64_t> observed{0};  // rows counted
    std::atomic<uint32_t> skip{0};      // owned stripes: rows to pass before the next counted one
  };
  template <class Inc>
  void CountRows(const float* rows, size_t n_rows, size_t stride, const double* scores, size_t first,
                 size_t step, std::atomic<uint64_t>* cells) const noexcept;
  uint32_t ScoreBin(double s) const noexcept;
  std::atomic<uint64_t>* Cells(uint32_t stripe) const noexcept { return cells_ + stripe * stride_cells_; }
  bool TryOwn(uint32_t stripe) noexcept;
  void Totals(std::vector<uint64_t>* cells, uint64_t* ticks, uint64_t* observed) const;

  size_t n_features_ = 0;
  uint32_t max_edges_ = 0;   // edges of the feature with the most
  size_t lanes_ = 0;         // n_features_ rounded up to a multiple of 8
  uint32_t width_ = 0;       // cells per feature: max_edges_ + 1 value bins + missing
  uint32_t score_slots_ = 0;  // score edges + 2, or 0
  bool has_score_ = false;
  uint32_t sample_every_ = 1;
  uint32_t n_stripes_ = 0;
  size_t stride_cells_ = 0;  // cells per stripe, a multiple of 8 (a cache line)
  std::vector<float> edges_t_;            // [edge j][feature f], max_edges_ * lanes_, NaN-padded
  std::vector<uint32_t> n_edges_;         // real edges per feature
  std::vector<double> score_edges_;
  std::vector<double> feature_ref_;       // n_features_ * width_, per-feature layout as the cells
  std::vector<double> score_ref_;
  std::unique_ptr<StripeCtl[]> ctl_;      // n_stripes_ + 1; the last is the shared stripe
  std::unique_ptr<std::atomic<uint64_t>[]> cell_store_;
  std::atomic<uint64_t>* cells_ = nullptr;  // cell_store_ aligned up to 64 bytes

  mutable std::mutex control_mu_;  // Psi / Reset / Counts
  std::vector<uint64_t> base_cells_;  // totals at the last Reset
  uint64_t base_ticks_ = 0;
  uint64_t base_observed_ = 0;
};

}  // namespace rtml

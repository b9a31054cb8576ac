// rtml metrics: the recorders a Scorer (or any hot path) writes into, read by an
// exporter through snapshots.
//
//   LatencyHistogram  non-negative int64 values (nanoseconds), log-linear buckets:
//                     values 0..127 exact, above that 64 linear sub-buckets per
//                     power of two, so a bucket's width is at most 1/64 (1.6%) of
//                     its lower bound and a reported quantile (a bucket midpoint)
//                     is within 1/128 (0.8%) of the exact one. Range 0 ..
//                     kMaxValue = 2^42 - 1 ns (73 minutes); larger values are
//                     clamped into the top bucket and counted as overflow;
//                     negative values are rejected (counted, not recorded: a
//                     clock that went backwards is a bug to see, not a zero).
//   ValueHistogram    doubles (model scores, feature values) in fixed bins given
//                     at creation, with underflow, overflow and NaN counts.
//   Counter           one cache-line aligned atomic uint64.
//   CounterArray      n named counters (e.g. missing values per feature), each on
//                     its own cache line.
//
// Thread-safety: every Record/Add may run on any number of threads at once, and
// concurrently with Snapshot/Load. A snapshot reads each bucket atomically but
// not all of them at one instant: records concurrent with it may be partially
// included (a value in the buckets but not yet in the sum, or the reverse). Its
// count is the sum of its bucket counts, so counts, cumulative buckets and
// quantiles of one snapshot always agree with each other. Reset is not atomic
// against concurrent records (each slot is zeroed on its own).
//
// Progress and cost: LatencyHistogram::Record, Counter and CounterArray are
// wait-free: a few integer ops and two (Counter: one) relaxed fetch_adds, no
// allocation (measured cost in docs/metrics.md). ValueHistogram::Record is
// lock-free: a bin lookup (O(1) for uniform bins, binary search otherwise), one
// fetch_add and a compare-exchange loop for the double sum. All hot paths are
// noexcept. Snapshot allocates and walks every bucket (2368 for a latency
// histogram): an exporter's path, not a per-request one.
//
// Memory order: every access is relaxed. The counters publish no other data, so
// there is nothing for an acquire to pair with; a reader only needs each
// counter's own value, which atomicity alone guarantees.
//
// Limits: a latency sum wraps after 2^64 ns (584 years) of total recorded time;
// a histogram is 19 KB and lives where its owner puts it (no heap); contended
// records of the same bucket from many cores serialize on its cache line.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace rtml {

inline constexpr std::size_t kCacheLine = 64;

// A monotonically increasing count on its own cache line.
class alignas(kCacheLine) Counter {
 public:
  Counter() noexcept = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  void Add(uint64_t n = 1) noexcept { v_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t Load() const noexcept { return v_.load(std::memory_order_relaxed); }
  void Reset() noexcept { v_.store(0, std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

// n named counters, each on its own cache line (64 bytes per counter), so that
// threads counting different features never share a line.
class CounterArray {
 public:
  // Throws InputError for a duplicate name.
  explicit CounterArray(std::vector<std::string> names);

  std::size_t size() const noexcept { return names_.size(); }
  const std::vector<std::string>& names() const noexcept { return names_; }
  // Index of a name, or -1. Setup path: a linear search.
  int64_t IndexOf(const std::string& name) const noexcept;

  // Hot path; i < size() is the caller's contract (not checked).
  void Add(std::size_t i, uint64_t n = 1) noexcept { slots_[i].Add(n); }
  uint64_t Load(std::size_t i) const noexcept { return slots_[i].Load(); }
  std::vector<uint64_t> Snapshot() const;
  void Reset() noexcept;

 private:
  std::vector<std::string> names_;
  std::unique_ptr<Counter[]> slots_;
};

// What a LatencyHistogram held at one (approximate) moment; see the header.
struct LatencySnapshot {
  std::vector<uint64_t> counts;  // per bucket, LatencyHistogram's index space
  uint64_t count = 0;            // sum of counts
  uint64_t sum = 0;              // of recorded (clamped) values, ns
  uint64_t overflow = 0;         // values above kMaxValue, clamped into the top bucket
  uint64_t negative = 0;         // rejected values below zero

  // Bounds of the buckets that hold values: Min() is the lowest non-empty
  // bucket's lower bound and Max() the highest one's upper bound, so they
  // enclose the exact min and max within the bucket error. 0 when empty.
  int64_t Min() const noexcept;
  int64_t Max() const noexcept;
  double Mean() const noexcept;  // sum / count; 0 when empty
  // The q-quantile by nearest rank (the ceil(q * count)-th smallest value, q
  // clamped to [0, 1]), reported as its bucket's midpoint: within 1/128 of the
  // exact value (exact below 128). 0 when empty.
  int64_t Quantile(double q) const noexcept;
  // Prometheus-style cumulative counts: for each bound b (ascending, ns), the
  // number of values in buckets whose upper bound is <= b (a value in the one
  // bucket straddling b, i.e. within 1.6% above b, counts at the next bound).
  // The caller appends (+Inf, count).
  std::vector<uint64_t> CumulativeAt(const std::vector<int64_t>& bounds_ns) const;
};

class LatencyHistogram {
 public:
  static constexpr int kSubBits = 6;                       // 64 sub-buckets
  static constexpr int kMaxBits = 42;                      // values < 2^42
  static constexpr int64_t kMaxValue = (int64_t{1} << kMaxBits) - 1;
  static constexpr std::size_t kBuckets =
      (std::size_t{2} << kSubBits) + std::size_t(kMaxBits - 1 - kSubBits) * (std::size_t{1} << kSubBits);

  LatencyHistogram() noexcept;
  LatencyHistogram(const LatencyHistogram&) = delete;
  LatencyHistogram& operator=(const LatencyHistogram&) = delete;

  // Hot path: wait-free, noexcept, no allocation.
  void Record(int64_t ns) noexcept {
    if (ns < 0) {
      negative_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (ns > kMaxValue) {
      overflow_.fetch_add(1, std::memory_order_relaxed);
      ns = kMaxValue;
    }
    counts_[BucketOf(ns)].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(static_cast<uint64_t>(ns), std::memory_order_relaxed);
  }
  // Record(values[i]) for each i; the same guarantees.
  void RecordMany(const int64_t* values, std::size_t n) noexcept;

  LatencySnapshot Snapshot() const;
  void SnapshotInto(LatencySnapshot* out) const;  // reuses out's buffer
  void Reset() noexcept;

  // The bucket of a value in [0, kMaxValue], and the values a bucket holds.
  static std::size_t BucketOf(int64_t ns) noexcept {
    const uint64_t v = static_cast<uint64_t>(ns);
    if (v < (uint64_t{2} << kSubBits)) return static_cast<std::size_t>(v);
    const int msb = 63 - __builtin_clzll(v);
    const int shift = msb - kSubBits;  // >= 1
    const uint64_t sub = (v >> shift) - (uint64_t{1} << kSubBits);
    return (std::size_t{2} << kSubBits) + std::size_t(shift - 1) * (std::size_t{1} << kSubBits) +
           static_cast<std::size_t>(sub);
  }
  static int64_t BucketLower(std::size_t i) noexcept;
  static int64_t BucketUpper(std::size_t i) noexcept;  // inclusive

  // Default export bounds: 1-2-5 steps from 100 ns to 1000 s, ns.
  static const std::vector<int64_t>& DefaultBoundsNs();

 private:
  alignas(kCacheLine) std::atomic<uint64_t> sum_{0};
  alignas(kCacheLine) std::atomic<uint64_t> overflow_{0};
  std::atomic<uint64_t> negative_{0};
  alignas(kCacheLine) std::atomic<uint64_t> counts_[kBuckets];
};

// What a ValueHistogram held at one (approximate) moment.
struct ValueSnapshot {
  std::vector<double> edges;     // bins + 1 ascending edges
  std::vector<uint64_t> counts;  // per bin: bin 0 is [e0, e1], bin i > 0 is (e_i, e_i+1]
  uint64_t underflow = 0;        // < e0, or -inf
  uint64_t overflow = 0;         // > e_last, or +inf
  uint64_t nan = 0;
  uint64_t count = 0;  // underflow + sum(counts) + overflow (NaN excluded)
  double sum = 0;      // of the finite values recorded, under- and overflow included

  // The q-quantile by nearest rank among non-NaN values, interpolated linearly
  // inside its bin (error below one bin width); -inf / +inf when it falls in
  // the underflow / overflow; NaN when empty.
  double Quantile(double q) const noexcept;
  // For each edge e1 .. e_last, the number of values <= it (Prometheus "le").
  // The caller appends (+Inf, count).
  std::vector<uint64_t> Cumulative() const;
};

class ValueHistogram {
 public:
  // edges: at least 2, finite, strictly increasing; throws InputError otherwise.
  explicit ValueHistogram(std::vector<double> edges);
  // bins equal bins over [lo, hi] (e.g. 0, 1, 100 for probabilities).
  static std::unique_ptr<ValueHistogram> Uniform(double lo, double hi, std::size_t bins);

  ValueHistogram(const ValueHistogram&) = delete;
  ValueHistogram& operator=(const ValueHistogram&) = delete;

  // Hot path: lock-free, noexcept, no allocation.
  void Record(double x) noexcept;
  void RecordMany(const double* values, std::size_t n) noexcept;

  const std::vector<double>& edges() const noexcept { return edges_; }
  std::size_t bins() const noexcept { return edges_.size() - 1; }
  // The bin of x: -1 for underflow, bins() for overflow (x must not be NaN).
  int64_t BinOf(double x) const noexcept;

  ValueSnapshot Snapshot() const;
  void Reset() noexcept;

 private:
  std::vector<double> edges_;
  double lo_ = 0, inv_width_ = 0;  // uniform bins: a first guess, then fixed up
  bool uniform_ = false;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  alignas(kCacheLine) std::atomic<double> sum_{0.0};
  alignas(kCacheLine) std::atomic<uint64_t> underflow_{0};
  std::atomic<uint64_t> overflow_{0};
  std::atomic<uint64_t> nan_{0};
};

}  // namespace rtml

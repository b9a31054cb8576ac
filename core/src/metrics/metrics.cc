// rtml metrics (see rtml/metrics.h for the contract).
#include "rtml/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "rtml/error.h"

namespace rtml {

namespace {

// The nearest rank of quantile q among n values, in [1, n] (n > 0).
uint64_t RankOf(double q, uint64_t n) noexcept {
  if (!(q > 0)) return 1;  // also NaN
  if (q >= 1) return n;
  const double r = std::ceil(q * static_cast<double>(n));
  if (r < 1) return 1;
  if (r >= static_cast<double>(n)) return n;
  return static_cast<uint64_t>(r);
}

}  // namespace

// ---------------------------------------------------------------- counters

CounterArray::CounterArray(std::vector<std::string> names) : names_(std::move(names)) {
  for (std::size_t i = 0; i < names_.size(); ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      if (names_[i] == names_[j]) throw InputError("counter '" + names_[i] + "': duplicate name");
    }
  }
  // Counter is alignas(64): C++17's aligned new gives each slot its own line.
  slots_ = std::make_unique<Counter[]>(names_.size());
}

int64_t CounterArray::IndexOf(const std::string& name) const noexcept {
  for (std::size_t i = 0; i < names_.size(); ++i) {
    if (names_[i] == name) return static_cast<int64_t>(i);
  }
  return -1;
}

std::vector<uint64_t> CounterArray::Snapshot() const {
  std::vector<uint64_t> out(names_.size());
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = slots_[i].Load();
  return out;
}

void CounterArray::Reset() noexcept {
  for (std::size_t i = 0; i < names_.size(); ++i) slots_[i].Reset();
}

// ------------------------------------------------------- latency histogram

LatencyHistogram::LatencyHistogram() noexcept {
  for (auto& c : counts_) c.store(0, std::memory_order_relaxed);
}

void LatencyHistogram::RecordMany(const int64_t* values, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) Record(values[i]);
}

int64_t LatencyHistogram::BucketLower(std::size_t i) noexcept {
  constexpr std::size_t kExact = std::size_t{2} << kSubBits;
  if (i < kExact) return static_cast<int64_t>(i);
  const std::size_t j = i - kExact;
  const int shift = static_cast<int>(j >> kSubBits) + 1;
  const uint64_t sub = (j & ((std::size_t{1} << kSubBits) - 1)) + (uint64_t{1} << kSubBits);
  return static_cast<int64_t>(sub << shift);
}

int64_t LatencyHistogram::BucketUpper(std::size_t i) noexcept {
  if (i + 1 >= kBuckets) return kMaxValue;
  return BucketLower(i + 1) - 1;
}

const std::vector<int64_t>& LatencyHistogram::DefaultBoundsNs() {
  static const std::vector<int64_t> bounds = [] {
    std::vector<int64_t> b;
    for (int64_t decade = 100; decade <= 100'000'000'000; decade *= 10) {
      for (int64_t m : {1, 2, 5}) b.push_back(decade * m);
    }
    b.push_back(1'000'000'000'000);
    return b;
  }();
  return bounds;
}

LatencySnapshot LatencyHistogram::Snapshot() const {
  LatencySnapshot s;
  SnapshotInto(&s);
  return s;
}

void LatencyHistogram::SnapshotInto(LatencySnapshot* out) const {
  out->counts.resize(kBuckets);
  uint64_t total = 0;
  for (std::size_t i = 0; i < kBuckets; ++i) {
    const uint64_t c = counts_[i].load(std::memory_order_relaxed);
    out->counts[i] = c;
    total += c;
  }
  out->count = total;
  out->sum = sum_.load(std::memory_order_relaxed);
  out->overflow = overflow_.load(std::memory_order_relaxed);
  out->negative = negative_.load(std::memory_order_relaxed);
}

void LatencyHistogram::Reset() noexcept {
  for (auto& c : counts_) c.store(0, std::memory_order_relaxed);
  sum_.store(0, std::memory_order_relaxed);
  overflow_.store(0, std::memory_order_relaxed);
  negative_.store(0, std::memory_order_relaxed);
}

int64_t LatencySnapshot::Min() const noexcept {
  for (std::size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] != 0) return LatencyHistogram::BucketLower(i);
  }
  return 0;
}

int64_t LatencySnapshot::Max() const noexcept {
  for (std::size_t i = counts.size(); i-- > 0;) {
    if (counts[i] != 0) return LatencyHistogram::BucketUpper(i);
  }
  return 0;
}

double LatencySnapshot::Mean() const noexcept {
  return count == 0 ? 0.0 : static_cast<double>(sum) / static_cast<double>(count);
}

int64_t LatencySnapshot::Quantile(double q) const noexcept {
  if (count == 0) return 0;
  const uint64_t rank = RankOf(q, count);
  uint64_t seen = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    seen += counts[i];
    if (seen >= rank) {
      const int64_t lo = LatencyHistogram::BucketLower(i);
      return lo + (LatencyHistogram::BucketUpper(i) - lo) / 2;
    }
  }
  return Max();  // unreachable while count == sum(counts)
}

std::vector<uint64_t> LatencySnapshot::CumulativeAt(const std::vector<int64_t>& bounds_ns) const {
  std::vector<uint64_t> out(bounds_ns.size());
  std::size_t i = 0;
  uint64_t seen = 0;
  for (std::size_t k = 0; k < bounds_ns.size(); ++k) {
    while (i < counts.size() && LatencyHistogram::BucketUpper(i) <= bounds_ns[k]) seen += counts[i++];
    out[k] = seen;
  }
  return out;
}

// --------------------------------------------------------- value histogram

ValueHistogram::ValueHistogram(std::vector<double> edges) : edges_(std::move(edges)) {
  if (edges_.size() < 2) {
    throw InputError("value histogram: expected at least 2 bin edges, got " + std::to_string(edges_.size()));
  }
  for (std::size_t i = 0; i < edges_.size(); ++i) {
    if (!std::isfinite(edges_[i])) {
      throw InputError("value histogram: edge " + std::to_string(i) + " is not finite");
    }
    if (i > 0 && !(edges_[i] > edges_[i - 1])) {
      throw InputError("value histogram: edges must increase strictly; edge " + std::to_string(i) + " (" +
                       std::to_string(edges_[i]) + ") <= edge " + std::to_string(i - 1) + " (" +
                       std::to_string(edges_[i - 1]) + ")");
    }
  }
  // Equal bins get an O(1) first guess; BinOf corrects it against the edges,
  // which stay the only authority on where a value falls.
  const std::size_t n = bins();
  const double width = (edges_[n] - edges_[0]) / static_cast<double>(n);
  uniform_ = width > 0 && std::isfinite(1.0 / width);
  for (std::size_t i = 0; uniform_ && i <= n; ++i) {
    const double expect = edges_[0] + width * static_cast<double>(i);
    uniform_ = std::fabs(edges_[i] - expect) <= 1e-6 * width;
  }
  lo_ = edges_[0];
  inv_width_ = uniform_ ? 1.0 / width : 0.0;
  counts_ = std::make_unique<std::atomic<uint64_t>[]>(n);
  for (std::size_t i = 0; i < n; ++i) counts_[i].store(0, std::memory_order_relaxed);
}

std::unique_ptr<ValueHistogram> ValueHistogram::Uniform(double lo, double hi, std::size_t bins) {
  if (bins < 1 || bins > (std::size_t{1} << 24)) {
    throw InputError("value histogram: bins must be in 1 .. 2^24, got " + std::to_string(bins));
  }
  if (!std::isfinite(lo) || !std::isfinite(hi) || !(hi > lo)) {
    throw InputError("value histogram: expected finite lo < hi, got lo=" + std::to_string(lo) +
                     " hi=" + std::to_string(hi));
  }
  std::vector<double> edges(bins + 1);
  for (std::size_t i = 0; i < bins; ++i) {
    edges[i] = lo + (hi - lo) * static_cast<double>(i) / static_cast<double>(bins);
  }
  edges[bins] = hi;
  return std::make_unique<ValueHistogram>(std::move(edges));
}

int64_t ValueHistogram::BinOf(double x) const noexcept {
  const std::size_t n = bins();
  if (x < edges_[0]) return -1;
  if (x > edges_[n]) return static_cast<int64_t>(n);
  std::size_t k;
  if (uniform_) {
    const double guess = (x - lo_) * inv_width_;
    k = guess >= static_cast<double>(n) ? n - 1 : static_cast<std::size_t>(guess);
    // Bin k is (e_k, e_k+1] (bin 0 also holds e_0); rounding can put the guess
    // one off at an edge.
    while (k > 0 && x <= edges_[k]) --k;
    while (k + 1 < n && x > edges_[k + 1]) ++k;
  } else {
    // First edge >= x among e_1 .. e_n: its bin ends there.
    const auto it = std::lower_bound(edges_.begin() + 1, edges_.end(), x);
    k = static_cast<std::size_t>(it - edges_.begin()) - 1;
  }
  return static_cast<int64_t>(k);
}

void ValueHistogram::Record(double x) noexcept {
  if (std::isnan(x)) {
    nan_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const int64_t k = BinOf(x);
  if (k < 0) {
    underflow_.fetch_add(1, std::memory_order_relaxed);
  } else if (k >= static_cast<int64_t>(bins())) {
    overflow_.fetch_add(1, std::memory_order_relaxed);
  } else {
    counts_[k].fetch_add(1, std::memory_order_relaxed);
  }
  if (std::isfinite(x)) {
    double cur = sum_.load(std::memory_order_relaxed);
    while (!sum_.compare_exchange_weak(cur, cur + x, std::memory_order_relaxed, std::memory_order_relaxed)) {
    }
  }
}

void ValueHistogram::RecordMany(const double* values, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) Record(values[i]);
}

ValueSnapshot ValueHistogram::Snapshot() const {
  ValueSnapshot s;
  s.edges = edges_;
  s.counts.resize(bins());
  uint64_t total = 0;
  for (std::size_t i = 0; i < bins(); ++i) {
    s.counts[i] = counts_[i].load(std::memory_order_relaxed);
    total += s.counts[i];
  }
  s.underflow = underflow_.load(std::memory_order_relaxed);
  s.overflow = overflow_.load(std::memory_order_relaxed);
  s.nan = nan_.load(std::memory_order_relaxed);
  s.count = total + s.underflow + s.overflow;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

void ValueHistogram::Reset() noexcept {
  for (std::size_t i = 0; i < bins(); ++i) counts_[i].store(0, std::memory_order_relaxed);
  underflow_.store(0, std::memory_order_relaxed);
  overflow_.store(0, std::memory_order_relaxed);
  nan_.store(0, std::memory_order_relaxed);
  sum_.store(0.0, std::memory_order_relaxed);
}

double ValueSnapshot::Quantile(double q) const noexcept {
  if (count == 0) return std::numeric_limits<double>::quiet_NaN();
  const uint64_t rank = RankOf(q, count);
  if (rank <= underflow) return -std::numeric_limits<double>::infinity();
  uint64_t seen = underflow;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    if (seen + counts[i] >= rank) {
      // The rank-th value is the (rank - seen)-th of counts[i] spread evenly
      // over the bin.
      const double frac = static_cast<double>(rank - seen) / static_cast<double>(counts[i]);
      return edges[i] + frac * (edges[i + 1] - edges[i]);
    }
    seen += counts[i];
  }
  return std::numeric_limits<double>::infinity();
}

std::vector<uint64_t> ValueSnapshot::Cumulative() const {
  std::vector<uint64_t> out(counts.size());
  uint64_t seen = underflow;
  for (std::size_t i = 0; i < counts.size(); ++i) out[i] = seen += counts[i];
  return out;
}

}  // namespace rtml

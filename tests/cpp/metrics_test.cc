// Tests of rtml/metrics.h: bucket geometry, quantiles against exact sorted-array
// quantiles, edge values, and concurrent recording (exact totals, snapshots that
// never go backwards).
#include "rtml/metrics.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#include "check.h"
#include "rtml/error.h"

using rtml::Counter;
using rtml::CounterArray;
using rtml::LatencyHistogram;
using rtml::LatencySnapshot;
using rtml::ValueHistogram;
using rtml::ValueSnapshot;

namespace {

// The ceil(q * n)-th smallest value (nearest rank), the definition Quantile uses.
template <typename T>
T ExactQuantile(const std::vector<T>& sorted, double q) {
  const auto n = static_cast<double>(sorted.size());
  auto rank = static_cast<std::size_t>(std::ceil(q * n));
  rank = std::min(std::max<std::size_t>(rank, 1), sorted.size());
  return sorted[rank - 1];
}

bool WithinRelative(int64_t got, int64_t want, double rel) {
  return std::fabs(static_cast<double>(got - want)) <= rel * static_cast<double>(want) + 0.5;
}

void CheckQuantiles(std::vector<int64_t> values, const char* what) {
  LatencyHistogram h;
  for (int64_t v : values) h.Record(v);
  std::sort(values.begin(), values.end());
  const LatencySnapshot s = h.Snapshot();
  CHECK(s.count == values.size());
  for (double q : {0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0}) {
    const int64_t want = ExactQuantile(values, q);
    const int64_t got = s.Quantile(q);
    if (!WithinRelative(got, want, 0.02)) {
      std::printf("  %s q=%g: got %lld, exact %lld\n", what, q, static_cast<long long>(got),
                  static_cast<long long>(want));
    }
    // The promise is 2%; a midpoint is within 1/128 of every value in its bucket.
    CHECK(WithinRelative(got, want, 1.0 / 128));
  }
  CHECK(s.Min() <= values.front() && WithinRelative(s.Min(), values.front(), 1.0 / 64));
  CHECK(s.Max() >= values.back() && WithinRelative(s.Max(), values.back(), 1.0 / 64));
  long double sum = 0;
  for (int64_t v : values) sum += v;
  CHECK(static_cast<long double>(s.sum) == sum);
  CHECK(std::fabs(s.Mean() - static_cast<double>(sum / values.size())) < 1e-6 * s.Mean() + 1e-9);
}

}  // namespace

RTML_TEST(BucketGeometry) {
  CHECK(LatencyHistogram::kBuckets == 2368);
  CHECK(LatencyHistogram::BucketLower(0) == 0);
  CHECK(LatencyHistogram::BucketUpper(LatencyHistogram::kBuckets - 1) == LatencyHistogram::kMaxValue);
  for (std::size_t i = 0; i < LatencyHistogram::kBuckets; ++i) {
    const int64_t lo = LatencyHistogram::BucketLower(i);
    const int64_t hi = LatencyHistogram::BucketUpper(i);
    CHECK(lo <= hi);
    CHECK(LatencyHistogram::BucketOf(lo) == i);
    CHECK(LatencyHistogram::BucketOf(hi) == i);
    if (i + 1 < LatencyHistogram::kBuckets) CHECK(LatencyHistogram::BucketLower(i + 1) == hi + 1);
    if (lo < 128) {
      CHECK(lo == hi);
    } else {
      CHECK(static_cast<double>(hi - lo + 1) <= static_cast<double>(lo) / 64.0);
    }
  }
}

RTML_TEST(QuantilesLognormal) {
  std::mt19937_64 rng(1);
  std::lognormal_distribution<double> d(std::log(20'000.0), 1.0);  // median 20 us
  std::vector<int64_t> v(200'000);
  for (auto& x : v) x = static_cast<int64_t>(d(rng));
  CheckQuantiles(v, "lognormal");
}

RTML_TEST(QuantilesUniform) {
  std::mt19937_64 rng(2);
  std::uniform_int_distribution<int64_t> d(0, 1'000'000);
  std::vector<int64_t> v(200'000);
  for (auto& x : v) x = d(rng);
  CheckQuantiles(v, "uniform");
}

RTML_TEST(QuantilesBimodal) {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> fast(2'000.0, 200.0), slow(200'000.0, 20'000.0);
  std::bernoulli_distribution pick_slow(0.05);
  std::vector<int64_t> v(200'000);
  for (auto& x : v) x = std::max<int64_t>(0, static_cast<int64_t>(pick_slow(rng) ? slow(rng) : fast(rng)));
  CheckQuantiles(v, "bimodal");
}

RTML_TEST(QuantilesSmallExact) {
  // Below 128 every value has its own bucket: quantiles are exact.
  std::vector<int64_t> v;
  for (int64_t x = 0; x < 128; ++x) v.push_back(x);
  LatencyHistogram h;
  for (int64_t x : v) h.Record(x);
  const LatencySnapshot s = h.Snapshot();
  for (double q : {0.0, 0.01, 0.5, 0.99, 1.0}) CHECK(s.Quantile(q) == ExactQuantile(v, q));
}

RTML_TEST(LatencyEdgeValues) {
  LatencyHistogram h;
  LatencySnapshot s = h.Snapshot();
  CHECK(s.count == 0 && s.Quantile(0.5) == 0 && s.Min() == 0 && s.Max() == 0 && s.Mean() == 0);

  h.Record(0);
  h.Record(1);
  s = h.Snapshot();
  CHECK(s.count == 2 && s.sum == 1 && s.Min() == 0 && s.Max() == 1);
  CHECK(s.Quantile(0.5) == 0 && s.Quantile(1.0) == 1);

  // Negative: rejected and counted, nothing else changes.
  h.Record(-1);
  h.Record(std::numeric_limits<int64_t>::min());
  s = h.Snapshot();
  CHECK(s.negative == 2 && s.count == 2 && s.sum == 1);

  // Above the range: clamped into the top bucket and counted.
  h.Reset();
  h.Record(LatencyHistogram::kMaxValue);
  h.Record(std::numeric_limits<int64_t>::max());
  s = h.Snapshot();
  CHECK(s.overflow == 1 && s.count == 2);
  CHECK(s.sum == 2 * static_cast<uint64_t>(LatencyHistogram::kMaxValue));
  CHECK(s.Max() == LatencyHistogram::kMaxValue);
  CHECK(WithinRelative(s.Quantile(0.5), LatencyHistogram::kMaxValue, 1.0 / 128));
  CHECK(s.counts[LatencyHistogram::kBuckets - 1] == 2);

  // One hour is in range and within the bucket error.
  h.Reset();
  const int64_t hour = 3'600'000'000'000;
  h.Record(hour);
  s = h.Snapshot();
  CHECK(s.overflow == 0 && WithinRelative(s.Quantile(0.5), hour, 1.0 / 128));
  CHECK(s.negative == 0);
}

RTML_TEST(CumulativeBounds) {
  LatencyHistogram h;
  for (int64_t v : {50, 99, 100, 101, 150, 1'000, 990'000, 5'000'000}) h.Record(v);
  const LatencySnapshot s = h.Snapshot();
  const std::vector<int64_t> bounds = {100, 1'000, 1'000'000, 10'000'000};
  const std::vector<uint64_t> c = s.CumulativeAt(bounds);
  CHECK(c.size() == 4);
  CHECK(c[0] == 3);  // 50, 99, 100: exact buckets below 128
  // 1000 sits in the bucket [1000, 1007], which straddles the bound: it counts
  // at the next bound up (documented).
  CHECK(c[1] == 5);
  CHECK(c[2] == 7);
  CHECK(c[3] == 8);
  const auto& d = LatencyHistogram::DefaultBoundsNs();
  CHECK(d.front() == 100 && d.back() == 1'000'000'000'000 && d.size() == 31);
  CHECK(std::is_sorted(d.begin(), d.end()));
}

RTML_TEST(ConcurrentRecordingSumsExactly) {
  LatencyHistogram h;
  constexpr int kThreads = 4;
  constexpr int64_t kPer = 200'000;
  std::atomic<bool> done{false};
  std::atomic<int> torn{0};
  // A reader taking snapshots while writers run: a bucket or the total never
  // goes backwards, and the total never exceeds what was written.
  std::thread reader([&] {
    LatencySnapshot prev = h.Snapshot(), cur;
    while (!done.load(std::memory_order_relaxed)) {
      h.SnapshotInto(&cur);
      if (cur.count < prev.count || cur.count > kThreads * kPer) torn.fetch_add(1);
      for (std::size_t i = 0; i < cur.counts.size(); ++i) {
        if (cur.counts[i] < prev.counts[i]) torn.fetch_add(1);
      }
      std::swap(prev, cur);
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&h, t] {
      for (int64_t i = 0; i < kPer; ++i) h.Record((i * 7919 + t) % 5'000'000);
    });
  }
  for (auto& w : writers) w.join();
  done.store(true, std::memory_order_relaxed);
  reader.join();
  CHECK(torn.load() == 0);

  const LatencySnapshot s = h.Snapshot();
  CHECK(s.count == kThreads * kPer);
  uint64_t want_sum = 0;
  std::vector<uint64_t> want(LatencyHistogram::kBuckets, 0);
  for (int t = 0; t < kThreads; ++t) {
    for (int64_t i = 0; i < kPer; ++i) {
      const int64_t v = (i * 7919 + t) % 5'000'000;
      want_sum += static_cast<uint64_t>(v);
      ++want[LatencyHistogram::BucketOf(v)];
    }
  }
  CHECK(s.sum == want_sum);
  CHECK(s.counts == want);
}

RTML_TEST(CountersConcurrent) {
  static_assert(alignof(Counter) == 64 && sizeof(Counter) == 64, "one counter per cache line");
  Counter c;
  CounterArray a({"amount", "age", "country"});
  CHECK(a.size() == 3 && a.IndexOf("age") == 1 && a.IndexOf("nope") == -1);
  CHECK_THROWS(CounterArray({"x", "x"}), rtml::InputError);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < 100'000; ++i) {
        c.Add();
        a.Add(static_cast<std::size_t>(i % 3), static_cast<uint64_t>(t + 1));
      }
    });
  }
  for (auto& t : ts) t.join();
  CHECK(c.Load() == 400'000);
  const std::vector<uint64_t> s = a.Snapshot();
  // Each thread adds (t + 1) to feature i % 3: 33'334 times to feature 0.
  CHECK(s[0] == 33'334u * 10 && s[1] == 33'333u * 10 && s[2] == 33'333u * 10);
  a.Reset();
  CHECK(a.Load(0) == 0 && a.Load(2) == 0);
}

namespace {

// The reference rule: bin 0 is [e0, e1], bin i is (e_i, e_i+1].
int64_t RefBin(const std::vector<double>& e, double x) {
  if (x < e.front()) return -1;
  if (x > e.back()) return static_cast<int64_t>(e.size()) - 1;
  if (x == e.front()) return 0;
  for (std::size_t i = 1; i < e.size(); ++i) {
    if (x <= e[i]) return static_cast<int64_t>(i) - 1;
  }
  return -2;  // unreachable
}

}  // namespace

RTML_TEST(ValueHistogramBins) {
  auto u = ValueHistogram::Uniform(0.0, 1.0, 100);
  std::vector<double> skew = {-3, -1, -0.5, 0, 0.1, 0.2, 1, 5, 100};
  ValueHistogram g(skew);
  std::mt19937_64 rng(4);
  std::uniform_real_distribution<double> d(-0.2, 1.2), wide(-5, 150);
  std::vector<double> probes = {0.0, 1.0, -0.0, 1e-300, -1e-300, std::nextafter(1.0, 2.0)};
  for (int k = 0; k <= 100; ++k) {
    probes.push_back(u->edges()[k]);
    probes.push_back(std::nextafter(u->edges()[k], 2.0));
    probes.push_back(std::nextafter(u->edges()[k], -2.0));
    probes.push_back(k / 100.0);
  }
  for (int i = 0; i < 100'000; ++i) probes.push_back(d(rng));
  for (double x : probes) CHECK(u->BinOf(x) == RefBin(u->edges(), x));
  for (double e : skew) {
    CHECK(g.BinOf(e) == RefBin(skew, e));
    CHECK(g.BinOf(std::nextafter(e, 1e9)) == RefBin(skew, std::nextafter(e, 1e9)));
  }
  for (int i = 0; i < 100'000; ++i) {
    const double x = wide(rng);
    CHECK(g.BinOf(x) == RefBin(skew, x));
  }
  CHECK_THROWS(ValueHistogram({1.0}), rtml::InputError);
  CHECK_THROWS(ValueHistogram({0.0, 0.0}), rtml::InputError);
  CHECK_THROWS(ValueHistogram({0.0, std::numeric_limits<double>::infinity()}), rtml::InputError);
  CHECK_THROWS(ValueHistogram::Uniform(1.0, 0.0, 10), rtml::InputError);
  CHECK_THROWS(ValueHistogram::Uniform(0.0, 1.0, 0), rtml::InputError);
}

RTML_TEST(ValueHistogramRecordAndQuantiles) {
  auto h = ValueHistogram::Uniform(0.0, 1.0, 100);
  ValueSnapshot s = h->Snapshot();
  CHECK(s.count == 0 && std::isnan(s.Quantile(0.5)));
  std::mt19937_64 rng(5);
  std::gamma_distribution<double> ga(2.0, 1.0), gb(5.0, 1.0);
  std::vector<double> v;
  for (int i = 0; i < 100'000; ++i) {
    const double a = ga(rng), b = gb(rng);
    v.push_back(a / (a + b));  // Beta(2, 5)
  }
  h->RecordMany(v.data(), v.size());
  h->Record(std::numeric_limits<double>::quiet_NaN());
  h->Record(-0.5);
  h->Record(-std::numeric_limits<double>::infinity());
  h->Record(1.5);
  h->Record(std::numeric_limits<double>::infinity());
  s = h->Snapshot();
  CHECK(s.nan == 1 && s.underflow == 2 && s.overflow == 2);
  CHECK(s.count == v.size() + 4);
  double want_sum = -0.5 + 1.5;
  for (double x : v) want_sum += x;
  CHECK(std::fabs(s.sum - want_sum) < 1e-6);
  const std::vector<uint64_t> cum = s.Cumulative();
  CHECK(cum.size() == 100 && cum.back() == s.count - s.overflow);
  CHECK(std::is_sorted(cum.begin(), cum.end()));
  CHECK(s.Quantile(0.0) == -std::numeric_limits<double>::infinity());
  CHECK(s.Quantile(1.0) == std::numeric_limits<double>::infinity());

  std::sort(v.begin(), v.end());
  auto h2 = ValueHistogram::Uniform(0.0, 1.0, 100);
  h2->RecordMany(v.data(), v.size());
  const ValueSnapshot s2 = h2->Snapshot();
  for (double q : {0.01, 0.1, 0.5, 0.9, 0.99}) {
    CHECK(std::fabs(s2.Quantile(q) - ExactQuantile(v, q)) <= 0.01);  // one bin width
  }
}

RTML_TEST(ValueHistogramConcurrent) {
  auto h = ValueHistogram::Uniform(0.0, 1.0, 10);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 100'000; ++i) h->Record((i % 8) * 0.125);  // exact in binary
    });
  }
  for (auto& t : ts) t.join();
  const ValueSnapshot s = h->Snapshot();
  CHECK(s.count == 400'000);
  CHECK(s.sum == 4.0 * 12'500.0 * (0 + 1 + 2 + 3 + 4 + 5 + 6 + 7) * 0.125);
}

RTML_TEST_MAIN()

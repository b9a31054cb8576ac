// DriftMonitor: bins, PSI against hand-computed values, sampling, Reset, and
// exact counts from concurrent observers.
#include "rtml/drift.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "check.h"

namespace {

using rtml::DriftBins;
using rtml::DriftMonitor;
using rtml::DriftSpec;
using rtml::Status;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

bool Near(double a, double b) { return std::fabs(a - b) <= 1e-12 * std::max(1.0, std::fabs(b)); }

// n edges 0, 1, ..., n - 1 with uniform reference proportions and no missing.
DriftBins Uniform(size_t n) {
  DriftBins b;
  for (size_t j = 0; j < n; ++j) b.edges.push_back(static_cast<double>(j));
  b.reference.assign(n + 1, 1.0 / static_cast<double>(n + 1));
  b.reference.push_back(0.0);
  return b;
}

}  // namespace

RTML_TEST(PsiMatchesHandComputedValue) {
  DriftSpec s;
  s.features.push_back({{0.5}, {0.5, 0.5, 0.0}});
  s.score = {{0.0}, {0.25, 0.75, 0.0}};
  DriftMonitor m(s);
  const float rows[] = {0.1f, 0.2f, 0.3f, 0.9f};
  const double scores[] = {1.0, 1.0, 1.0, 1.0};
  CHECK(m.ObserveMany(rows, 4, 1, scores) == Status::kOk);
  const rtml::DriftReport r = m.Psi();
  // Live (0.75, 0.25, 0) vs reference (0.5, 0.5, 0): the missing bin is 1e-4 on
  // both sides and adds 0; 0.25 ln 1.5 + 0.25 ln 2 = 0.25 ln 3.
  CHECK(Near(r.feature_psi[0], 0.25 * std::log(3.0)));
  CHECK(Near(r.feature_psi[0], 0.27465307216702745));
  // Score: live (0, 1, 0) vs (0.25, 0.75, 0): the empty live bin is floored at 1e-4.
  CHECK(Near(r.score_psi, (1e-4 - 0.25) * std::log(1e-4 / 0.25) + 0.25 * std::log(1.0 / 0.75)));
  CHECK((r.feature_counts[0] == std::vector<uint64_t>{3, 1, 0}));
  CHECK((r.score_counts == std::vector<uint64_t>{0, 4, 0}));
  CHECK(r.rows_seen == 4 && r.rows_observed == 4);
  CHECK(rtml::LevelOfPsi(r.feature_psi[0]) == rtml::DriftLevel::kSignificant);
  CHECK(rtml::LevelOfPsi(0.0999) == rtml::DriftLevel::kNone);
  CHECK(rtml::LevelOfPsi(0.1) == rtml::DriftLevel::kModerate);
  CHECK(rtml::LevelOfPsi(0.25) == rtml::DriftLevel::kSignificant);
  CHECK(rtml::LevelOfPsi(std::nan("")) == rtml::DriftLevel::kNone);
  CHECK(std::string(rtml::DriftLevelName(rtml::DriftLevel::kModerate)) == "moderate");
}

RTML_TEST(MissingValuesUseTheirOwnBin) {
  DriftSpec s;
  s.features.push_back({{0.5}, {0.5, 0.5, 0.0}});
  DriftMonitor m(s);
  const float rows[] = {0.1f, 0.2f, kNaN, 0.9f};
  CHECK(m.ObserveMany(rows, 4, 1, nullptr) == Status::kOk);
  const rtml::DriftReport r = m.Psi();
  CHECK((r.feature_counts[0] == std::vector<uint64_t>{2, 1, 1}));
  CHECK(Near(r.feature_psi[0], 0.25 * std::log(2.0) + (0.25 - 1e-4) * std::log(0.25 / 1e-4)));
  CHECK(!m.monitors_score() && std::isnan(r.score_psi) && r.score_counts.empty());
}

// Values on an edge go up (numpy.searchsorted(..., "right")), infinities to
// the outer bins, NaN to missing; both the linear and the binary-search kernel.
RTML_TEST(BinBoundaries) {
  for (const size_t n_edges : {size_t{3}, size_t{9}, size_t{20}, size_t{32}, size_t{40}, size_t{100}}) {
    DriftSpec s;
    s.features.push_back(Uniform(n_edges));
    DriftMonitor m(s);
    std::vector<float> xs = {-kInf, -1.0f, 0.0f, 0.5f, 1.0f, static_cast<float>(n_edges) - 1, 1e30f, kInf, kNaN};
    CHECK(m.ObserveMany(xs.data(), xs.size(), 1, nullptr) == Status::kOk);
    const std::vector<uint64_t> c = m.Psi().feature_counts[0];
    CHECK(c.size() == n_edges + 2);
    CHECK(c[0] == 2);                  // -inf, -1
    CHECK(c[1] == 2);                  // 0 (on edge 0), 0.5
    CHECK(c[2] == 1);                  // 1
    CHECK(c[n_edges] == 3);            // last edge, 1e30, +inf
    CHECK(c[n_edges + 1] == 1);        // NaN
  }
}

// A double edge between two float32 values is rounded up, so the bin of
// every float32 x is the bin of double(x).
RTML_TEST(EdgesRoundUpToFloat32) {
  DriftSpec s;
  s.features.push_back({{0.1}, {0.5, 0.5, 0.0}});
  s.features.push_back({{-1e300, 1e300}, {0.0, 1.0, 0.0, 0.0}});
  DriftMonitor m(s);
  const float just_below = std::nextafter(0.1f, 0.0f);
  CHECK(static_cast<double>(0.1f) > 0.1 && static_cast<double>(just_below) < 0.1);
  CHECK(m.FeatureEdges(0)[0] == 0.1f);
  const float rows[] = {0.1f, -kInf, just_below, 3.0f, 0.2f, kInf};
  CHECK(m.ObserveMany(rows, 3, 2, nullptr) == Status::kOk);
  const rtml::DriftReport r = m.Psi();
  CHECK((r.feature_counts[0] == std::vector<uint64_t>{1, 2, 0}));
  CHECK((r.feature_counts[1] == std::vector<uint64_t>{1, 1, 1, 0}));
}

RTML_TEST(SamplingCountsEveryKthRow) {
  DriftSpec s;
  s.features.push_back(Uniform(10));
  s.score = Uniform(10);
  s.sample_every = 3;
  DriftMonitor m(s);
  std::vector<float> rows(25);
  std::vector<double> scores(25);
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = scores[i] = static_cast<double>(i % 10);
  // Rows 0, 3, 6, ... counted across single and batched calls alike.
  CHECK(m.Observe(&rows[0], 1, scores[0]) == Status::kOk);
  CHECK(m.Observe(&rows[1], 1, scores[1]) == Status::kOk);
  CHECK(m.ObserveMany(&rows[2], 2, 1, &scores[2]) == Status::kOk);
  CHECK(m.ObserveMany(&rows[4], 21, 1, &scores[4]) == Status::kOk);
  const rtml::DriftReport r = m.Psi();
  CHECK(r.rows_seen == 25);
  CHECK(r.rows_observed == 9);  // 0, 3, ..., 24
  std::vector<uint64_t> want(11, 0);
  for (size_t i = 0; i < 25; i += 3) want[static_cast<size_t>(rows[i]) + 1]++;
  CHECK((std::vector<uint64_t>(r.feature_counts[0].begin(), r.feature_counts[0].end() - 1) == want));
  CHECK((std::vector<uint64_t>(r.score_counts.begin(), r.score_counts.end() - 1) == want));
}

RTML_TEST(ResetStartsANewWindow) {
  DriftSpec s;
  s.features.push_back({{0.5}, {0.5, 0.5, 0.0}});
  DriftMonitor m(s);
  const float lo[] = {0.1f, 0.2f};
  const float hi[] = {0.7f};
  CHECK(m.ObserveMany(lo, 2, 1, nullptr) == Status::kOk);
  m.Reset();
  rtml::DriftReport r = m.Psi();
  CHECK(std::isnan(r.feature_psi[0]) && r.rows_observed == 0 && r.rows_seen == 0);
  CHECK((r.feature_counts[0] == std::vector<uint64_t>{0, 0, 0}));
  CHECK(m.Observe(hi, 1, 0.0) == Status::kOk);
  r = m.Psi();
  CHECK((r.feature_counts[0] == std::vector<uint64_t>{0, 1, 0}));
  CHECK(r.rows_observed == 1);
}

RTML_TEST(BadShapesCountNothing) {
  DriftSpec s;
  s.features.push_back(Uniform(3));
  s.features.push_back(Uniform(3));
  DriftMonitor m(s);
  const float rows[] = {1, 2, 3, 4};
  CHECK(m.Observe(rows, 3, 0.0) == Status::kBadShape);
  CHECK(m.ObserveMany(rows, 2, 1, nullptr) == Status::kBadShape);
  CHECK(m.ObserveMany(rows, 0, 2, nullptr) == Status::kOk);
  CHECK(m.Psi().rows_seen == 0);
}

RTML_TEST(InvalidSpecsThrow) {
  auto make = [](DriftBins b, DriftBins score = {}) {
    DriftSpec s;
    s.features.push_back(std::move(b));
    s.score = std::move(score);
    return DriftMonitor(s).num_features();
  };
  CHECK_THROWS(make({{1.0, 1.0}, {0.2, 0.3, 0.5, 0.0}}), rtml::InputError);     // not increasing
  CHECK_THROWS(make({{std::nan("")}, {0.5, 0.5, 0.0}}), rtml::InputError);      // NaN edge
  CHECK_THROWS(make({{1.0}, {0.5, 0.5}}), rtml::InputError);                    // no missing bin
  CHECK_THROWS(make({{1.0}, {0.5, 0.6, 0.0}}), rtml::InputError);               // sum != 1
  CHECK_THROWS(make({{1.0}, {-0.5, 1.5, 0.0}}), rtml::InputError);              // negative
  CHECK_THROWS(make({{}, {1.0, 0.0}}, {{1.0}, {}}), rtml::InputError);          // score edges, no reference
  CHECK_THROWS(DriftMonitor(DriftSpec{}), rtml::InputError);                   // nothing to monitor
  DriftSpec zero;
  zero.features.push_back(Uniform(2));
  zero.sample_every = 0;
  CHECK_THROWS(DriftMonitor(zero), rtml::InputError);
  CHECK(make({{}, {0.0, 1.0}}) == 1);  // a feature that was always missing
}

// 4 threads (more than the stripes, so the shared stripe is used too) count
// through Observe and ObserveMany while a reader checks that totals only grow
// and that no feature ever shows more rows than were offered.
static void ObserveConcurrently(uint32_t stripes) {
  constexpr size_t kFeatures = 30;
  constexpr int kThreads = 4;
  constexpr size_t kRows = 20000;
  DriftSpec s;
  for (size_t f = 0; f < kFeatures; ++f) s.features.push_back(Uniform(10));
  s.score = Uniform(10);
  s.stripes = stripes;
  DriftMonitor m(s);
  std::vector<float> rows(kRows * kFeatures);
  std::vector<double> scores(kRows);
  for (size_t i = 0; i < kRows; ++i) {
    for (size_t f = 0; f < kFeatures; ++f) {
      rows[i * kFeatures + f] = (i + f) % 11 == 10 ? kNaN : static_cast<float>((i + f) % 11);
    }
    scores[i] = static_cast<double>(i % 10);
  }
  std::atomic<int> running{kThreads};
  std::atomic<int> ready{0};
  std::atomic<bool> ok{true};
  std::thread reader([&] {
    uint64_t last = 0;
    while (running.load(std::memory_order_acquire) > 0) {
      const rtml::DriftReport r = m.Psi();
      if (r.rows_observed < last || r.rows_seen > kThreads * kRows) ok = false;
      for (const auto& c : r.feature_counts) {
        uint64_t n = 0;
        for (const uint64_t v : c) n += v;
        if (n > kThreads * kRows) ok = false;
      }
      last = r.rows_observed;
    }
  });
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      // Start together, so the calls overlap rather than run one thread after another.
      ready.fetch_add(1, std::memory_order_relaxed);
      while (ready.load(std::memory_order_relaxed) < kThreads) std::this_thread::yield();
      for (size_t i = 0; i < kRows;) {
        if (t % 2 == 0 || i % 7 == 0) {
          if (m.Observe(&rows[i * kFeatures], kFeatures, scores[i]) != Status::kOk) ok = false;
          ++i;
        } else {
          const size_t n = std::min<size_t>(64, kRows - i);
          if (m.ObserveMany(&rows[i * kFeatures], n, kFeatures, &scores[i]) != Status::kOk) ok = false;
          i += n;
        }
      }
      running.fetch_sub(1, std::memory_order_release);
    });
  }
  for (auto& th : ts) th.join();
  reader.join();
  CHECK(ok.load());
  const rtml::DriftReport r = m.Psi();
  CHECK(r.rows_seen == kThreads * kRows);
  CHECK(r.rows_observed == kThreads * kRows);
  for (size_t f = 0; f < kFeatures; ++f) {
    std::vector<uint64_t> want(11, 0);
    uint64_t missing = 0;
    for (size_t i = 0; i < kRows; ++i) {
      const size_t v = (i + f) % 11;
      if (v == 10) {
        missing += kThreads;
      } else {
        want[v + 1] += kThreads;
      }
    }
    want.push_back(missing);
    CHECK(r.feature_counts[f] == want);
  }
  std::vector<uint64_t> want_score(12, 0);  // 11 value bins + missing
  for (size_t i = 0; i < kRows; ++i) want_score[i % 10 + 1] += kThreads;
  CHECK(r.score_counts == want_score);
  CHECK(std::isfinite(r.score_psi));
}

RTML_TEST(ConcurrentObserveCountsExactly) {
  ObserveConcurrently(1);  // most calls that overlap go to the shared stripe
  ObserveConcurrently(2);
}

// Reset and Psi racing observers (for the sanitizers); windows stay sane.
RTML_TEST(ConcurrentResetKeepsWindowsSane) {
  DriftSpec s;
  for (int f = 0; f < 4; ++f) s.features.push_back(Uniform(5));
  s.stripes = 2;
  s.sample_every = 2;
  DriftMonitor m(s);
  const float row[] = {0, 1, 2, 3};
  std::atomic<bool> stop{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < 3; ++t) {
    ts.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) (void)m.ObserveMany(row, 1, 4, nullptr);
    });
  }
  bool ok = true;
  for (int i = 0; i < 2000; ++i) {
    if (i % 10 == 0) m.Reset();
    // Cells only grow and the window subtracts an earlier reading: a
    // wrapped (torn) difference would show as an absurd count.
    const rtml::DriftReport r = m.Psi();
    for (const auto& c : r.feature_counts) {
      for (const uint64_t v : c) ok = ok && v < (uint64_t{1} << 40);
    }
    ok = ok && r.rows_seen < (uint64_t{1} << 40) && r.rows_observed < (uint64_t{1} << 40);
  }
  stop = true;
  for (auto& th : ts) th.join();
  m.Reset();
  CHECK(m.Observe(row, 4, 0.0) == Status::kOk);
  CHECK(m.Observe(row, 4, 0.0) == Status::kOk);
  const rtml::DriftReport r = m.Psi();
  CHECK(ok);
  CHECK(r.rows_seen == 2);
  CHECK(r.rows_observed == 1);
}

RTML_TEST_MAIN()

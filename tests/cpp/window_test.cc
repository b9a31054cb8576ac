// Tests of rtml::WindowTable against a brute-force reference over the list of
// events, plus a concurrent stress test with an invariant a torn read breaks.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "rtml/window.h"

using rtml::IngestCounters;
using rtml::Key;
using rtml::KeyKind;
using rtml::TableStatus;
using rtml::WindowOp;
using rtml::WindowSpec;
using rtml::WindowTable;

namespace {

constexpr int64_t kSec = 1'000'000'000;
const std::vector<WindowOp> kAllOps = {WindowOp::kCount, WindowOp::kSum,    WindowOp::kMean,
                                       WindowOp::kMin,   WindowOp::kMax,    WindowOp::kStddev,
                                       WindowOp::kLast};

WindowSpec Spec(std::vector<int64_t> windows_s, int64_t bucket_s, uint32_t max_buckets,
                int64_t history_s = 0) {
  WindowSpec s;
  s.key_kind = KeyKind::kInt64;
  s.capacity = 100;
  s.ops = kAllOps;
  for (int64_t w : windows_s) s.windows_ns.push_back(w * kSec);
  s.bucket_ns = bucket_s * kSec;
  s.max_buckets = max_buckets;
  s.history_ns = history_s * kSec;
  return s;
}

struct Event {
  int64_t ts;
  double value;
  int64_t order;  // arrival
};

int64_t FloorDiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

// The documented semantics, computed from the stored events of one entity:
// window w (resolution r, k buckets) holds the events in buckets
// floor(now/r)-k+1 .. floor(now/r).
void Reference(const WindowTable& t, const std::vector<Event>& events, int64_t now, double* out) {
  const auto& spec = t.spec();
  const size_t nw = spec.windows_ns.size();
  int64_t newest = std::numeric_limits<int64_t>::min();
  for (const auto& e : events) newest = std::max(newest, e.ts);
  for (size_t wi = 0; wi < nw; ++wi) {
    const auto& l = t.layout()[wi];
    const int64_t cur = FloorDiv(now, l.bucket_ns);
    if (!events.empty() && cur - l.buckets + 1 <= FloorDiv(newest, l.bucket_ns) - l.ring_buckets) {
      for (size_t o = 0; o < spec.ops.size(); ++o) out[o * nw + wi] = NAN;  // ring no longer holds it
      continue;
    }
    std::vector<const Event*> in;
    for (const auto& e : events) {
      const int64_t j = FloorDiv(e.ts, l.bucket_ns);
      if (j <= cur && j > cur - l.buckets) in.push_back(&e);
    }
    double sum = 0, mn = INFINITY, mx = -INFINITY;
    const Event* last = nullptr;
    for (const Event* e : in) {
      sum += e->value;
      mn = std::min(mn, e->value);
      mx = std::max(mx, e->value);
      if (last == nullptr || e->ts > last->ts || (e->ts == last->ts && e->order > last->order)) last = e;
    }
    const double n = static_cast<double>(in.size());
    double m2 = 0;
    for (const Event* e : in) m2 += (e->value - sum / n) * (e->value - sum / n);
    for (size_t o = 0; o < spec.ops.size(); ++o) {
      double v = NAN;
      switch (spec.ops[o]) {
        case WindowOp::kCount: v = n; break;
        case WindowOp::kSum: v = sum; break;
        case WindowOp::kMean: v = in.empty() ? NAN : sum / n; break;
        case WindowOp::kMin: v = in.empty() ? NAN : mn; break;
        case WindowOp::kMax: v = in.empty() ? NAN : mx; break;
        case WindowOp::kStddev: v = in.empty() ? NAN : std::sqrt(m2 / n); break;
        case WindowOp::kLast: v = in.empty() ? NAN : last->value; break;
      }
      out[o * nw + wi] = v;
    }
  }
}

bool Close(double got, double want) {
  if (std::isnan(want)) return std::isnan(got);
  return std::fabs(got - want) <= 1e-9 * std::max(1.0, std::fabs(want));
}

}  // namespace

RTML_TEST(ResolutionsAndRings) {
  // 1m, 10m, 1h, 24h over 10 s buckets with at most 60 buckets per window.
  WindowTable t(Spec({60, 600, 3600, 86400}, 10, 60));
  const auto& l = t.layout();
  CHECK(l[0].bucket_ns == 10 * kSec && l[0].buckets == 6);
  CHECK(l[1].bucket_ns == 10 * kSec && l[1].buckets == 60);
  CHECK(l[2].bucket_ns == 60 * kSec && l[2].buckets == 60);
  CHECK(l[3].bucket_ns == 1440 * kSec && l[3].buckets == 60);
  CHECK(l[0].ring == l[1].ring && l[1].ring != l[2].ring && l[2].ring != l[3].ring);
  CHECK(t.num_columns() == 28);
  // A window the bucket does not divide, or an odd spec, is refused.
  CHECK_THROWS(WindowTable(Spec({65}, 10, 60)), rtml::InputError);
  CHECK_THROWS(WindowTable(Spec({}, 10, 60)), rtml::InputError);
  CHECK_THROWS(WindowTable(Spec({60, 60}, 10, 60)), rtml::InputError);
  CHECK_THROWS(WindowTable(Spec({86400}, 1, 100000)), rtml::InputError);  // record too large
}

RTML_TEST(EmptyLateDroppedAndLost) {
  WindowTable t(Spec({60}, 10, 60));  // one ring of 7 buckets: 6 + 1
  double out[7];
  CHECK(t.Query(Key::Int(1), 0, out) == TableStatus::kNotFound);
  CHECK(out[0] == 0 && out[1] == 0 && std::isnan(out[2]) && std::isnan(out[6]));
  CHECK(t.Ingest(Key::Int(1), 5.0, 1000 * kSec) == TableStatus::kOk);
  CHECK(t.Ingest(Key::Int(1), 7.0, 995 * kSec) == TableStatus::kOk);  // late, still in the ring
  CHECK(t.Query(Key::Int(1), 1000 * kSec, out) == TableStatus::kOk);
  CHECK(out[0] == 2 && out[1] == 12 && out[2] == 6 && out[3] == 5 && out[4] == 7 && out[5] == 1);
  CHECK(out[6] == 5.0);  // last by event time, not arrival
  CHECK(t.Ingest(Key::Int(1), 1.0, 900 * kSec) == TableStatus::kStale);  // older than the ring
  CHECK(t.Ingest(Key::Int(1), NAN, 1000 * kSec) == TableStatus::kBadValue);
  const IngestCounters c = t.counters();
  CHECK(c.events == 2 && c.late == 1 && c.dropped == 1);
  // An event 70 s later reuses the slot of bucket 100: a query as of 1000 s
  // would need that bucket, so it answers NaN rather than a partial count.
  CHECK(t.Ingest(Key::Int(1), 1.0, 1070 * kSec) == TableStatus::kOk);
  CHECK(t.Query(Key::Int(1), 1000 * kSec, out) == TableStatus::kOk);
  CHECK(std::isnan(out[0]) && std::isnan(out[1]));
  CHECK(t.Query(Key::Int(1), 1069 * kSec, out) == TableStatus::kOk && out[0] == 0);
  CHECK(t.Query(Key::Int(1), 1070 * kSec, out) == TableStatus::kOk && out[0] == 1);
  // After the ring's whole span without events the record expires: empty.
  CHECK(t.Query(Key::Int(1), 1070 * kSec + 70 * kSec, out) == TableStatus::kNotFound && out[0] == 0);
  CHECK(t.Sweep(1070 * kSec + 70 * kSec) == 1);
}

RTML_TEST(RandomStreamsMatchBruteForce) {
  for (uint64_t seed = 0; seed < 6; ++seed) {
    std::mt19937_64 rng(seed);
    WindowTable t(Spec({30, 120, 600, 3600}, 5, seed % 2 ? 24 : 10, /*history_s=*/seed % 3 * 60));
    std::vector<std::vector<Event>> kept(4);  // events each entity's rings hold
    const size_t cols = t.num_columns();
    std::vector<double> got(cols), want(cols);
    int64_t clock = 10'000;
    int64_t failures = 0, lost_windows = 0;
    for (int64_t step = 0; step < 4000; ++step) {
      const int64_t k = static_cast<int64_t>(rng() % 4);
      clock += static_cast<int64_t>(rng() % 7);
      // Mostly near the clock, some late by up to 2 h, rarely far in the past.
      int64_t ts = clock - static_cast<int64_t>(rng() % 20);
      if (rng() % 8 == 0) ts = clock - static_cast<int64_t>(rng() % 7200);
      const double value = static_cast<double>(static_cast<int64_t>(rng() % 2001) - 1000) / 8;
      const int64_t ts_ns = ts * kSec + static_cast<int64_t>(rng() % kSec);
      const TableStatus st = t.Ingest(Key::Int(k), value, ts_ns);
      if (st == TableStatus::kOk) kept[static_cast<size_t>(k)].push_back({ts_ns, value, step});
      if (step % 97 != 0) continue;
      // Queries at the clock, a little behind it, and far enough behind that
      // some windows need buckets the rings no longer hold (NaN).
      for (int64_t lag : {int64_t{0}, int64_t{3}, int64_t{45}, int64_t{400}}) {
        const int64_t now = (clock - lag) * kSec;
        for (int64_t e = 0; e < 4; ++e) {
          t.Query(Key::Int(e), now, got.data());
          Reference(t, kept[static_cast<size_t>(e)], now, want.data());
          for (size_t c = 0; c < cols; ++c) {
            if (!Close(got[c], want[c])) ++failures;
            if (std::isnan(want[c]) && c < 4) ++lost_windows;  // count columns
          }
        }
      }
    }
    CHECK(failures == 0);
    CHECK(lost_windows > 0);  // the as-of NaN rule was exercised
    const IngestCounters c = t.counters();
    CHECK(c.events + c.dropped == 4000);
    CHECK(c.dropped > 0 && c.late > 0);
  }
}

// Writers ingest value 1.0 for random entities; a consistent view of any
// window then has sum == count and min == max == 1. A torn read (count of one
// update, sum of another) breaks it.
RTML_TEST(ConcurrentQueriesNeverSeeATornRecord) {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  constexpr int64_t kReads = 100'000;
#else
  constexpr int64_t kReads = 4'000'000;
#endif
  WindowSpec s = Spec({10, 60}, 1, 60);
  s.ops = {WindowOp::kCount, WindowOp::kSum, WindowOp::kMin, WindowOp::kMax};
  s.key_kind = KeyKind::kString;
  WindowTable t(s);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> clock{1'000 * kSec};
  std::atomic<int64_t> violations{0}, nonempty{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < 2; ++w) {
    writers.emplace_back([&, w] {
      std::mt19937_64 rng(static_cast<uint64_t>(w) + 7);
      while (!stop.load(std::memory_order_relaxed)) {
        const int64_t now = clock.fetch_add(1'000'000, std::memory_order_relaxed);
        const std::string key = "entity-" + std::to_string(rng() % 16);
        const TableStatus st = t.Ingest(Key::Str(key), 1.0, now - static_cast<int64_t>(rng() % (5 * kSec)));
        if (st != TableStatus::kOk && st != TableStatus::kStale) violations.fetch_add(1);
      }
    });
  }
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&, r] {
      std::mt19937_64 rng(static_cast<uint64_t>(r) + 70);
      double out[8];
      for (int64_t i = 0; i < kReads / 2; ++i) {
        const std::string key = "entity-" + std::to_string(rng() % 16);
        if (t.Query(Key::Str(key), clock.load(std::memory_order_relaxed), out) != TableStatus::kOk) continue;
        for (int w = 0; w < 2; ++w) {
          const double n = out[w], sum = out[2 + w], mn = out[4 + w], mx = out[6 + w];
          if (std::isnan(n)) continue;  // a bucket it needs was overwritten
          if (n > 0) nonempty.fetch_add(1, std::memory_order_relaxed);
          if (sum != n || (n > 0 && (mn != 1.0 || mx != 1.0))) violations.fetch_add(1);
        }
      }
    });
  }
  for (auto& th : readers) th.join();
  stop.store(true);
  for (auto& th : writers) th.join();
  CHECK(violations.load() == 0);
  CHECK(nonempty.load() > 0);
  std::printf("  %lld queries, %lld non-empty windows, %lld violations\n", static_cast<long long>(kReads),
              static_cast<long long>(nonempty.load()), static_cast<long long>(violations.load()));
}

RTML_TEST_MAIN()

// Tests of rtml::Scorer: gathering from request, tables and windows; batch vs
// single agreement; A/B routing; shadow; and model swaps under concurrent
// scoring (ASan catches a model freed while read, TSan a race).
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "stumps.h"
#include "rtml/scorer.h"
#include "rtml/scorer_stats.h"
#include "rtml/serving_log.h"

using rtml::FeatureTable;
using rtml::Forest;
using rtml::InputSource;
using rtml::Key;
using rtml::KeyKind;
using rtml::Scorer;
using rtml::ScorerConfig;
using rtml::ScorerPlan;
using rtml::TableStatus;

namespace {

constexpr int64_t kSec = 1'000'000'000;

// One stump per feature f: x_f < 0.5 (NaN goes left) -> (f + 1) * scale,
// else (f + 1) * scale * 10. The model's output is the sum.
std::shared_ptr<const Forest> SumOfStumps(int32_t nf, double scale) {
  return rtml_test::Stumps(nf, 0.0, [scale](int32_t f) {
    return std::make_pair((f + 1) * scale, (f + 1) * scale * 10);
  });
}

double Expected(const std::vector<double>& row, double scale) {
  double sum = 0;
  for (size_t f = 0; f < row.size(); ++f) {
    const bool left = std::isnan(row[f]) || row[f] < 0.5;
    sum += (static_cast<double>(f) + 1) * scale * (left ? 1 : 10);
  }
  return sum;
}

ScorerConfig One(std::shared_ptr<const Forest> m, const std::string& version) {
  ScorerConfig c;
  c.arms.push_back({"main", std::move(m), version, 1.0});
  return c;
}

// A store with a str-keyed table (2 fields), an int-keyed table (1 field) and
// a str-keyed window set (count over 1m), and the 4-feature plan over them:
// [request field 0, card.f1, merchant.f0, card_txn.count_1m].
struct Fixture {
  FeatureTable cards{[] {
    rtml::TableSchema s;
    s.key_kind = KeyKind::kString;
    s.num_fields = 2;
    s.capacity = 100;
    return s;
  }()};
  FeatureTable merchants{[] {
    rtml::TableSchema s;
    s.key_kind = KeyKind::kInt64;
    s.num_fields = 1;
    s.capacity = 100;
    return s;
  }()};
  rtml::WindowTable txn{[] {
    rtml::WindowSpec s;
    s.key_kind = KeyKind::kString;
    s.capacity = 100;
    s.ops = {rtml::WindowOp::kCount};
    s.windows_ns = {60 * kSec};
    return s;
  }()};
  ScorerPlan Plan() const {
    ScorerPlan p;
    p.tables = {&cards, &merchants};
    p.windows = {&txn};
    p.keys = {KeyKind::kString, KeyKind::kInt64};
    p.num_fields = 1;
    p.inputs = {{InputSource::Kind::kRequest, 0, 0, 0},
                {InputSource::Kind::kTable, 0, 1, 0},
                {InputSource::Kind::kTable, 1, 0, 1},
                {InputSource::Kind::kWindow, 0, 0, 0}};
    return p;
  }
};

}  // namespace

RTML_TEST(GathersRequestTablesAndWindows) {
  Fixture fx;
  const double card[2] = {7.0, 0.9};
  CHECK(fx.cards.Upsert(Key::Str("c1"), card, 100 * kSec) == TableStatus::kOk);
  const double merchant = 0.1;
  CHECK(fx.merchants.Upsert(Key::Int(42), &merchant, 100 * kSec) == TableStatus::kOk);
  for (int i = 0; i < 3; ++i) CHECK(fx.txn.Ingest(Key::Str("c1"), 5.0, 100 * kSec) == TableStatus::kOk);
  Scorer sc(fx.Plan(), One(SumOfStumps(4, 1.0), "v1"));
  const Key keys[2] = {Key::Str("c1"), Key::Int(42)};
  const double amount = 12.5;
  double out = 0, row[4], age[4];
  uint8_t found[4];
  rtml::ScoreTrace trace{row, age, found};
  CHECK(sc.Score(keys, &amount, 101 * kSec, &out, &trace) == rtml::Status::kOk);
  CHECK(row[0] == 12.5 && row[1] == 0.9 && row[2] == 0.1 && row[3] == 3.0);
  CHECK(out == Expected({12.5, 0.9, 0.1, 3.0}, 1.0));
  CHECK(age[1] == 1.0 && age[2] == 1.0 && std::isnan(age[0]));
  CHECK(found[0] && found[1] && found[2] && found[3]);
  // Unknown entities: table features NaN (the default direction), count 0.
  const Key unknown[2] = {Key::Str("nobody"), Key::Int(7)};
  CHECK(sc.Score(unknown, &amount, 101 * kSec, &out, &trace) == rtml::Status::kOk);
  CHECK(std::isnan(row[1]) && std::isnan(row[2]) && row[3] == 0.0);
  CHECK(!found[1] && !found[2] && found[3]);
  CHECK(out == Expected({12.5, NAN, NAN, 0.0}, 1.0));
  // Batch agrees with single requests.
  const Key batch_keys[6] = {Key::Str("c1"), Key::Int(42), Key::Str("x"), Key::Int(42),
                             Key::Str("c1"), Key::Int(1)};
  const double fields[3] = {0.2, 3.0, -1.0};
  double outs[3];
  CHECK(sc.ScoreMany(batch_keys, fields, 3, 101 * kSec, outs) == rtml::Status::kOk);
  for (int i = 0; i < 3; ++i) {
    double one = 0;
    CHECK(sc.Score(batch_keys + 2 * i, fields + i, 101 * kSec, &one) == rtml::Status::kOk);
    CHECK(outs[i] == one);
  }
}

RTML_TEST(ValidationNamesWhatDoesNotFit) {
  Fixture fx;
  CHECK_THROWS(Scorer(fx.Plan(), One(SumOfStumps(3, 1.0), "v1")), rtml::InputError);
  ScorerPlan bad = fx.Plan();
  bad.inputs[1].column = 5;
  CHECK_THROWS(Scorer(bad, One(SumOfStumps(4, 1.0), "v1")), rtml::InputError);
  bad = fx.Plan();
  bad.inputs[2].key = 0;  // a str key for the int-keyed table
  CHECK_THROWS(Scorer(bad, One(SumOfStumps(4, 1.0), "v1")), rtml::InputError);
  Scorer sc(fx.Plan(), One(SumOfStumps(4, 1.0), "v1"));
  CHECK_THROWS(sc.SetConfig(One(SumOfStumps(5, 1.0), "v2")), rtml::InputError);
  CHECK(sc.config().arms[0].version == "v1");  // the old model stays
  ScorerConfig ab = One(SumOfStumps(4, 1.0), "a");
  ab.arms[0].cumulative = 0.5;
  ab.arms.push_back({"b", SumOfStumps(4, 2.0), "b", 0.9});  // weights do not reach 1
  CHECK_THROWS(sc.SetConfig(ab), rtml::InputError);
}

RTML_TEST(ABRoutingIsStableAndShadowScores) {
  Fixture fx;
  ScorerConfig ab = One(SumOfStumps(4, 1.0), "a");
  ab.arms[0].cumulative = 0.8;
  ab.arms.push_back({"b", SumOfStumps(4, 2.0), "b", 1.0});
  ab.shadow = SumOfStumps(4, 3.0);
  ab.shadow_version = "s";
  Scorer sc(fx.Plan(), ab);
  int to_b = 0;
  const double amount = 1.0;
  for (int i = 0; i < 2000; ++i) {
    const std::string card = "card-" + std::to_string(i);
    const Key keys[2] = {Key::Str(card), Key::Int(i)};
    rtml::ScoreTrace t1, t2;
    double o1 = 0, o2 = 0;
    CHECK(sc.Score(keys, &amount, 0, &o1, &t1) == rtml::Status::kOk);
    CHECK(sc.Score(keys, &amount, 0, &o2, &t2) == rtml::Status::kOk);
    CHECK(t1.arm == t2.arm && o1 == o2);  // the same entity always goes to the same arm
    const double scale = t1.arm == 0 ? 1.0 : 2.0;
    CHECK(o1 == Expected({1.0, NAN, NAN, 0.0}, scale));
    CHECK(t1.shadow == Expected({1.0, NAN, NAN, 0.0}, 3.0));
    to_b += t1.arm;
  }
  CHECK(to_b > 300 && to_b < 500);  // 20% of 2000, give or take
}

// Scoring threads run while another thread swaps between two models: every
// score equals one of the two models' answers and nothing fails.
RTML_TEST(SwapUnderConcurrentScoring) {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  constexpr int kSwaps = 300;
#else
  constexpr int kSwaps = 400;
#endif
  Fixture fx;
  Scorer sc(fx.Plan(), One(SumOfStumps(4, 1.0), "v1"));
  // Metrics recorded from every scoring thread at once (TSan checks them too).
  rtml::ScorerStats stats({"amount", "card_f1", "merchant_f0", "count_1m"}, {-1, 0, 1, -1}, {1, 2}, 1,
                          {0.0, 10.0, 100.0}, 0);
  const double want_a = Expected({1.0, NAN, NAN, 0.0}, 1.0);
  const double want_b = Expected({1.0, NAN, NAN, 0.0}, 2.0);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> wrong{0}, scored{0};
  std::vector<std::thread> scorers;
  for (int t = 0; t < 3; ++t) {
    scorers.emplace_back([&, t] {
      const Key keys[2] = {Key::Str("k"), Key::Int(t)};
      const double amount = 1.0;
      double fields[8] = {1, 1, 1, 1, 1, 1, 1, 1};
      Key many[16];
      for (int i = 0; i < 8; ++i) {
        many[2 * i] = Key::Str("k");
        many[2 * i + 1] = Key::Int(i);
      }
      double outs[8];
      while (!stop.load(std::memory_order_relaxed)) {
        double out = 0;
        if (sc.Score(keys, &amount, 0, &out, nullptr, &stats) != rtml::Status::kOk ||
            (out != want_a && out != want_b)) {
          wrong.fetch_add(1);
        }
        if (sc.ScoreMany(many, fields, 8, 0, outs, nullptr, &stats) != rtml::Status::kOk) wrong.fetch_add(1);
        for (double o : outs) {
          if (o != want_a && o != want_b) wrong.fetch_add(1);
        }
        scored.fetch_add(9, std::memory_order_relaxed);
      }
    });
  }
  // Swap only once scoring runs: on a busy machine the threads may start late,
  // and swaps with no reader around would prove nothing.
  while (scored.load() == 0) std::this_thread::yield();
  for (int i = 0; i < kSwaps; ++i) {
    sc.SetConfig(One(SumOfStumps(4, i % 2 ? 1.0 : 2.0), "v" + std::to_string(i)));
  }
  stop.store(true);
  for (auto& th : scorers) th.join();
  CHECK(wrong.load() == 0);
  CHECK(scored.load() > 0);
  CHECK(stats.rows.Load() == static_cast<uint64_t>(scored.load()));
  CHECK(stats.requests.Load() * 9 == static_cast<uint64_t>(scored.load()) * 2);
  CHECK(stats.missing.Load(1) == static_cast<uint64_t>(scored.load()));  // no card records at all
  std::printf("  %d swaps during %lld scores, %lld wrong\n", kSwaps, static_cast<long long>(scored.load()),
              static_cast<long long>(wrong.load()));
}

// Writers append rows whose key, score and features all derive from one
// number; snapshots taken meanwhile must hold only whole rows.
RTML_TEST(ServingLogNeverHoldsATornRow) {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  constexpr int kSnapshots = 20;
#else
  constexpr int kSnapshots = 300;
#endif
  rtml::ServingLog log(64, 6, {KeyKind::kInt64, KeyKind::kString}, 16);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> counter{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < 2; ++w) {
    writers.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        const int64_t v = counter.fetch_add(1, std::memory_order_relaxed);
        const std::string s = "key-" + std::to_string(v);
        const Key keys[2] = {Key::Int(v), Key::Str(s)};
        double f[6];
        for (int j = 0; j < 6; ++j) f[j] = static_cast<double>(v + j);
        log.Append(keys, v, 0, static_cast<double>(v), f);
      }
    });
  }
  while (counter.load() < 1000) std::this_thread::yield();  // writers are running
  int64_t torn = 0, rows = 0;
  for (int i = 0; i < kSnapshots; ++i) {
    for (const auto& r : log.Snapshot()) {
      ++rows;
      bool ok = r.int_keys[0] == static_cast<int64_t>(r.score) && r.now_ns == r.int_keys[0] &&
                r.str_keys[1] == "key-" + std::to_string(r.int_keys[0]);
      for (int j = 0; j < 6; ++j) ok = ok && r.features[static_cast<size_t>(j)] == r.score + j;
      torn += !ok;
    }
  }
  stop.store(true);
  for (auto& w : writers) w.join();
  CHECK(torn == 0);
  CHECK(rows > 0);
  const auto last = log.Snapshot();
  CHECK(last.size() == 64 && last.back().position + 1 == log.appended());
}

RTML_TEST_MAIN()

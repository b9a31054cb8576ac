// A small engine world for the engine tests and fuzzer: a table "card" (str
// key; fields float64, integer; TTL 1 h), a window set "txn" (count over 1m),
// a scorer "s" over [request amount, card.f0, txn.count] whose model is
// f(x) = 1 + 10 [x0 >= 0.5] + 100 [x1 >= 0.5] + 1000 [x2 >= 0.5], and a
// 2-feature model "m" of the same form.
#pragma once

#include <cmath>
#include <memory>
#include <utility>

#include "rtml/engine.h"
#include "stumps.h"

namespace rtml_test {

inline std::shared_ptr<const rtml::Forest> PowersOfTen(int32_t nf) {
  return Stumps(nf, 1.0, [](int32_t f) { return std::make_pair(0.0, std::pow(10.0, f + 1)); });
}

struct EngineFixture {
  static constexpr int64_t kHour = 3'600'000'000'000;
  rtml::FeatureTable cards{[] {
    rtml::TableSchema s;
    s.key_kind = rtml::KeyKind::kString;
    s.num_fields = 2;
    s.capacity = 1000;
    s.max_key_bytes = 16;
    s.ttl_ns = kHour;  // so fuzzed times reach the expiry arithmetic
    return s;
  }()};
  rtml::WindowTable txn{[] {
    rtml::WindowSpec s;
    s.key_kind = rtml::KeyKind::kString;
    s.capacity = 1000;
    s.max_key_bytes = 16;
    s.ops = {rtml::WindowOp::kCount};
    s.windows_ns = {kHour / 60};
    return s;
  }()};
  std::unique_ptr<rtml::Scorer> scorer;
  rtml::server::Engine engine;

  explicit EngineFixture(const rtml::server::EngineConfig& config) : engine(config) {
    using rtml::InputSource;
    rtml::ScorerPlan p;
    p.tables = {&cards};
    p.windows = {&txn};
    p.keys = {rtml::KeyKind::kString};
    p.num_fields = 1;
    p.inputs = {{InputSource::Kind::kRequest, 0, 0, 0},
                {InputSource::Kind::kTable, 0, 0, 0},
                {InputSource::Kind::kWindow, 0, 0, 0}};
    rtml::ScorerConfig cfg;
    cfg.arms.push_back({"main", PowersOfTen(3), "v1", 1.0});
    scorer = std::make_unique<rtml::Scorer>(std::move(p), std::move(cfg));
    engine.SetScorer("s", scorer.get(), nullptr);
    engine.SetModel("m", PowersOfTen(2));
    using rtml::server::FieldKind;
    engine.SetTable("card", &cards, {FieldKind::kFloat64, FieldKind::kInteger}, kHour);
    engine.SetWindows("txn", &txn, kHour);
  }
};

}  // namespace rtml_test

// Tests of rtml::SnapshotGate and RestoreSection: exact round trips, damaged
// sections refused before anything is written, and one point-in-time cut
// across tables while writers write (also run under TSan).
#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "rtml/feature_table.h"
#include "rtml/snapshot.h"
#include "rtml/window.h"

using rtml::FeatureTable;
using rtml::Key;
using rtml::KeyKind;
using rtml::SnapshotGate;
using rtml::TableSchema;
using rtml::TableStatus;

namespace {

TableSchema Schema(KeyKind kind, uint32_t fields, uint64_t capacity) {
  TableSchema s;
  s.key_kind = kind;
  s.num_fields = fields;
  s.capacity = capacity;
  s.max_key_bytes = 16;
  return s;
}

std::map<std::string, std::vector<double>> Contents(const FeatureTable& t) {
  std::map<std::string, std::vector<double>> out;
  const uint32_t f = t.schema().num_fields;
  t.ForEach(0, [&](const Key& k, const double* v, int64_t ev) {
    std::vector<double> row(v, v + f);
    row.push_back(static_cast<double>(ev));
    out[k.is_string ? std::string(k.s) : std::to_string(k.i)] = row;
  });
  return out;
}

void Restore(FeatureTable& t, const std::string& section) {
  rtml::RestoreSection(t, reinterpret_cast<const uint8_t*>(section.data()), section.size());
}

}  // namespace

RTML_TEST(RoundTripIsExactAndDeletedRecordsStayDeleted) {
  SnapshotGate gate;
  FeatureTable a(Schema(KeyKind::kString, 3, 100));
  FeatureTable b(Schema(KeyKind::kInt64, 1, 100));
  a.set_gate(&gate);
  b.set_gate(&gate);
  for (int i = 0; i < 50; ++i) {
    const double v[3] = {i * 0.5, -i * 1.0, 1e300};
    CHECK(a.Upsert(Key::Str("key-" + std::to_string(i)), v, 100 + i) == TableStatus::kOk);
    CHECK(b.Upsert(Key::Int(i * 1000003), v, i) == TableStatus::kOk);
  }
  for (int i = 0; i < 50; i += 3) CHECK(a.Erase(Key::Str("key-" + std::to_string(i))) == TableStatus::kOk);
  std::vector<std::string> sections;
  gate.Take({&a, &b}, &sections);
  CHECK(sections.size() == 2);
  FeatureTable a2(Schema(KeyKind::kString, 3, 100));
  FeatureTable b2(Schema(KeyKind::kInt64, 1, 100));
  Restore(a2, sections[0]);
  Restore(b2, sections[1]);
  CHECK(Contents(a2) == Contents(a) && a2.Size() == a.Size());
  CHECK(Contents(b2) == Contents(b) && b2.Size() == 50);
  // Restoring needs an empty table of the same schema.
  CHECK_THROWS(Restore(a2, sections[0]), rtml::InputError);
  FeatureTable wrong(Schema(KeyKind::kInt64, 3, 100));
  CHECK_THROWS(Restore(wrong, sections[0]), rtml::SnapshotError);
  FeatureTable small(Schema(KeyKind::kString, 3, 10));
  CHECK_THROWS(Restore(small, sections[0]), rtml::SnapshotError);
  // Every prefix is refused and leaves the table empty.
  for (size_t n = 0; n < sections[0].size(); ++n) {
    FeatureTable t(Schema(KeyKind::kString, 3, 100));
    CHECK_THROWS(Restore(t, sections[0].substr(0, n)), rtml::SnapshotError);
    CHECK(t.Size() == 0);
  }
  // A table of another gate is refused.
  SnapshotGate other;
  CHECK_THROWS(other.Take({&a}, &sections), rtml::InputError);
}

RTML_TEST(WindowRecordsRoundTrip) {
  rtml::WindowSpec spec;
  spec.key_kind = KeyKind::kInt64;
  spec.capacity = 10;
  spec.ops = {rtml::WindowOp::kCount, rtml::WindowOp::kStddev, rtml::WindowOp::kLast};
  spec.windows_ns = {60'000'000'000, 600'000'000'000};
  rtml::WindowTable w(spec), w2(spec);
  SnapshotGate gate;
  w.table().set_gate(&gate);
  for (int i = 0; i < 200; ++i) {
    (void)w.Ingest(Key::Int(i % 7), i * 0.25, int64_t{1'000'000'000'000} + i * 3'000'000'000LL);
  }
  std::vector<std::string> sections;
  gate.Take({&w.table()}, &sections);
  Restore(w2.table(), sections[0]);
  double x[6], y[6];
  for (int k = 0; k < 7; ++k) {
    for (int64_t now : {int64_t{1'300'000'000'000}, int64_t{1'590'000'000'000}, int64_t{1'700'000'000'000}}) {
      CHECK(w.Query(Key::Int(k), now, x) == w2.Query(Key::Int(k), now, y));
      for (int c = 0; c < 6; ++c) CHECK((x[c] == y[c]) || (x[c] != x[c] && y[c] != y[c]));
    }
  }
}

// Writers do A[k] = e, then B[k] = e, for e = 1, 2, ... A point-in-time cut
// has B[k] <= A[k] for every k; copying A and then B at two different moments
// would not.
RTML_TEST(TakeIsOnePointInTimeCutWhileWritersWrite) {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  constexpr int kSnapshots = 5;
  constexpr int64_t kFiller = 5'000;
#else
  constexpr int kSnapshots = 40;
  constexpr int64_t kFiller = 100'000;
#endif
  SnapshotGate gate;
  FeatureTable a(Schema(KeyKind::kInt64, 2, kFiller + 8));
  FeatureTable b(Schema(KeyKind::kInt64, 2, kFiller + 8));
  a.set_gate(&gate);
  b.set_gate(&gate);
  const double zero[2] = {0, 0};
  for (int64_t k = 100; k < 100 + kFiller; ++k) {  // makes each scan take time
    (void)a.Upsert(Key::Int(k), zero, 0);
    (void)b.Upsert(Key::Int(k), zero, 0);
  }
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int64_t k = 0; k < 2; ++k) {
    writers.emplace_back([&, k] {
      for (int64_t e = 1; !stop.load(std::memory_order_relaxed); ++e) {
        const double v[2] = {static_cast<double>(e), static_cast<double>(e) + 0.5};
        (void)a.Upsert(Key::Int(k), v, e);
        (void)b.Upsert(Key::Int(k), v, e);
        if (e % 64 == 0) (void)a.Erase(Key::Int(100 + (e / 64) % kFiller));  // deletes race too
      }
    });
  }
  int64_t violations = 0, torn = 0, seen = 0;
  for (int i = 0; i < kSnapshots; ++i) {
    std::vector<std::string> sections;
    gate.Take({&a, &b}, &sections);
    FeatureTable a2(Schema(KeyKind::kInt64, 2, kFiller + 8));
    FeatureTable b2(Schema(KeyKind::kInt64, 2, kFiller + 8));
    Restore(a2, sections[0]);
    Restore(b2, sections[1]);
    for (int64_t k = 0; k < 2; ++k) {
      double va[2] = {0, 0}, vb[2] = {0, 0};
      int64_t ea = 0, eb = 0;
      const bool ha = a2.Get(Key::Int(k), 0, va, &ea) == TableStatus::kOk;
      const bool hb = b2.Get(Key::Int(k), 0, vb, &eb) == TableStatus::kOk;
      if (hb && (!ha || vb[0] > va[0])) ++violations;
      if ((ha && va[1] != va[0] + 0.5) || (hb && vb[1] != vb[0] + 0.5)) ++torn;
      seen += ha;
    }
  }
  stop.store(true);
  for (auto& w : writers) w.join();
  CHECK(violations == 0);
  CHECK(torn == 0);
  CHECK(seen > 0);
  CHECK(!gate.active());
}

RTML_TEST_MAIN()

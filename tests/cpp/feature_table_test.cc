// Tests of rtml::FeatureTable: semantics, limits, and a concurrent stress test
// whose records carry an invariant a torn read would break.
#include <algorithm>
#include <atomic>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "rtml/feature_table.h"

using rtml::FeatureTable;
using rtml::Key;
using rtml::KeyKind;
using rtml::TableSchema;
using rtml::TableStatus;

namespace {

TableSchema Schema(KeyKind kind, uint32_t fields, uint64_t capacity, int64_t ttl = 0) {
  TableSchema s;
  s.key_kind = kind;
  s.num_fields = fields;
  s.capacity = capacity;
  s.max_key_bytes = 24;
  s.ttl_ns = ttl;
  return s;
}

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr int64_t kStressReads = 200'000;  // sanitizers run ~10-50x slower
#else
constexpr int64_t kStressReads = 10'000'000;
#endif

}  // namespace

RTML_TEST(UpsertGetEraseIntKeys) {
  FeatureTable t(Schema(KeyKind::kInt64, 2, 100));
  const double a[2] = {1.5, -2.0};
  double out[2] = {0, 0};
  int64_t ev = 0;
  CHECK(t.Get(Key::Int(7), 0, out, &ev) == TableStatus::kNotFound);
  CHECK(t.Upsert(Key::Int(7), a, 100) == TableStatus::kOk);
  CHECK(t.Get(Key::Int(7), 0, out, &ev) == TableStatus::kOk);
  CHECK(out[0] == 1.5 && out[1] == -2.0 && ev == 100);
  const double b[2] = {9, 9};
  CHECK(t.Upsert(Key::Int(7), b, 99) == TableStatus::kStale);  // older event: ignored
  CHECK(t.Get(Key::Int(7), 0, out, &ev) == TableStatus::kOk && out[0] == 1.5);
  CHECK(t.Upsert(Key::Int(7), b, 100) == TableStatus::kOk);  // same event: replaces
  CHECK(t.Get(Key::Int(7), 0, out, &ev) == TableStatus::kOk && out[0] == 9);
  CHECK(t.Size() == 1);
  CHECK(t.Erase(Key::Int(7)) == TableStatus::kOk);
  CHECK(t.Erase(Key::Int(7)) == TableStatus::kNotFound);
  CHECK(t.Get(Key::Int(7), 0, out, &ev) == TableStatus::kNotFound);
  CHECK(t.Size() == 0);
  CHECK(t.Upsert(Key::Int(7), a, 50) == TableStatus::kOk);  // a deleted key takes any event
  CHECK(t.Get(Key::Int(7), 0, out, &ev) == TableStatus::kOk && ev == 50);
}

RTML_TEST(StringKeysAreComparedInFull) {
  FeatureTable t(Schema(KeyKind::kString, 1, 1000));
  const std::string keys[] = {"", "a", "card-0001", "card-0001x", "card-0002", std::string(24, 'z')};
  for (size_t i = 0; i < std::size(keys); ++i) {
    const double v = static_cast<double>(i);
    CHECK(t.Upsert(Key::Str(keys[i]), &v, 1) == TableStatus::kOk);
  }
  for (size_t i = 0; i < std::size(keys); ++i) {
    double out = -1;
    int64_t ev = 0;
    CHECK(t.Get(Key::Str(keys[i]), 0, &out, &ev) == TableStatus::kOk);
    CHECK(out == static_cast<double>(i));
  }
  double v = 0;
  int64_t ev = 0;
  CHECK(t.Get(Key::Str("card-000"), 0, &v, &ev) == TableStatus::kNotFound);
  CHECK(t.Upsert(Key::Str(std::string(25, 'z')), &v, 1) == TableStatus::kKeyTooLong);
  CHECK(t.Upsert(Key::Int(1), &v, 1) == TableStatus::kBadKeyKind);
  std::map<std::string, double> seen;
  t.ForEach(0, [&](const Key& k, const double* vals, int64_t) { seen[std::string(k.s)] = vals[0]; });
  CHECK(seen.size() == std::size(keys));
  CHECK(seen["card-0001x"] == 3.0);
}

RTML_TEST(TtlExpiresOnReadAndSweepReclaims) {
  FeatureTable t(Schema(KeyKind::kInt64, 1, 4, /*ttl=*/1000));
  const double v = 3;
  double out = 0;
  int64_t ev = 0;
  CHECK(t.Upsert(Key::Int(1), &v, 10'000) == TableStatus::kOk);
  CHECK(t.Get(Key::Int(1), 10'999, &out, &ev) == TableStatus::kOk);
  CHECK(t.Get(Key::Int(1), 11'000, &out, &ev) == TableStatus::kNotFound);  // missing, not stale
  CHECK(t.Sweep(10'500) == 0);
  CHECK(t.Sweep(11'000) == 1);
  CHECK(t.Size() == 0);
  int visited = 0;
  t.ForEach(0, [&](const Key&, const double*, int64_t) { ++visited; });
  CHECK(visited == 0);
}

RTML_TEST(CapacityIsAHardLimitAndDeletesFreeIt) {
  FeatureTable t(Schema(KeyKind::kInt64, 1, 10));
  const double v = 1;
  for (int64_t k = 0; k < 10; ++k) CHECK(t.Upsert(Key::Int(k), &v, 1) == TableStatus::kOk);
  CHECK(t.Upsert(Key::Int(10), &v, 1) == TableStatus::kFull);
  CHECK(t.Upsert(Key::Int(3), &v, 2) == TableStatus::kOk);  // updates still work when full
  CHECK(t.Erase(Key::Int(0)) == TableStatus::kOk);
  CHECK(t.Upsert(Key::Int(10), &v, 1) == TableStatus::kOk);
  CHECK(t.Size() == 10);
  // Churn far beyond the slot count: deleted slots are reused.
  for (int64_t round = 0; round < 200; ++round) {
    CHECK(t.Erase(Key::Int(10 + round)) == TableStatus::kOk);
    CHECK(t.Upsert(Key::Int(11 + round), &v, 1) == TableStatus::kOk);
  }
  CHECK(t.Size() == 10);
}

// GetMany gives, key by key, what Get gives: hits, absent, erased and expired
// keys, bad keys, duplicates, and batch sizes around the prefetch distance.
RTML_TEST(GetManyAgreesWithGet) {
  constexpr uint32_t kFields = 3;
  FeatureTable t(Schema(KeyKind::kString, kFields, 200, /*ttl=*/1000));
  std::vector<std::string> names;
  for (int k = 0; k < 150; ++k) names.push_back(k % 7 == 0 ? std::string(k % 24, 'k') + "!" : "key-" + std::to_string(k));
  names.push_back("");                    // empty key
  names.push_back(std::string(24, 'z'));  // the longest allowed
  for (size_t k = 0; k < names.size(); ++k) {
    const double v[kFields] = {static_cast<double>(k), -static_cast<double>(k), 0.5};
    if (k % 5 != 4) CHECK(t.Upsert(Key::Str(names[k]), v, /*event_ns=*/static_cast<int64_t>(k) * 10) == TableStatus::kOk);
  }
  for (size_t k = 0; k < names.size(); k += 9) (void)t.Erase(Key::Str(names[k]));
  std::vector<Key> keys;
  for (size_t k = 0; k < names.size(); ++k) keys.push_back(Key::Str(names[k]));
  keys.push_back(Key::Str("never-stored"));
  keys.push_back(Key::Str(std::string(25, 'z')));  // too long
  keys.push_back(Key::Int(3));                     // wrong kind
  keys.push_back(Key::Str(names[1]));              // a duplicate
  for (const size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{9}, size_t{17}, keys.size()}) {
    for (const int64_t now : {int64_t{0}, int64_t{1500}}) {  // at 1500, events before 500 expired
      std::vector<double> values(n * kFields);
      std::vector<int64_t> ev(n);
      std::vector<TableStatus> st(n);
      t.GetMany(keys.data(), n, now, values.data(), ev.data(), st.data());
      for (size_t i = 0; i < n; ++i) {
        double want[kFields];
        int64_t want_ev = 0;
        const TableStatus want_st = t.Get(keys[i], now, want, &want_ev);
        CHECK(st[i] == want_st);
        if (want_st != TableStatus::kOk) continue;
        CHECK(ev[i] == want_ev);
        for (uint32_t f = 0; f < kFields; ++f) CHECK(values[i * kFields + f] == want[f]);
      }
    }
  }
  // Every outcome occurred.
  std::vector<double> values(keys.size() * kFields);
  std::vector<int64_t> ev(keys.size());
  std::vector<TableStatus> st(keys.size());
  t.GetMany(keys.data(), keys.size(), 1500, values.data(), ev.data(), st.data());
  for (const TableStatus want : {TableStatus::kOk, TableStatus::kNotFound, TableStatus::kKeyTooLong,
                                 TableStatus::kBadKeyKind}) {
    CHECK(std::count(st.begin(), st.end(), want) > 0);
  }
  // Int keys.
  FeatureTable ti(Schema(KeyKind::kInt64, 1, 100));
  std::vector<Key> ikeys;
  for (int64_t k = -20; k < 40; ++k) {
    const double v = static_cast<double>(k) * 2;
    if (k % 3 != 0) CHECK(ti.Upsert(Key::Int(k), &v, 1) == TableStatus::kOk);
    ikeys.push_back(Key::Int(k));
  }
  ikeys.push_back(Key::Str("x"));  // wrong kind
  std::vector<double> iv(ikeys.size());
  std::vector<int64_t> iev(ikeys.size());
  std::vector<TableStatus> ist(ikeys.size());
  ti.GetMany(ikeys.data(), ikeys.size(), 0, iv.data(), iev.data(), ist.data());
  for (size_t i = 0; i < ikeys.size(); ++i) {
    double want = 0;
    int64_t want_ev = 0;
    const TableStatus want_st = ti.Get(ikeys[i], 0, &want, &want_ev);
    CHECK(ist[i] == want_st);
    if (want_st == TableStatus::kOk) CHECK(iv[i] == want && iev[i] == want_ev);
  }
  CHECK(ist.back() == TableStatus::kBadKeyKind);
}

RTML_TEST(BadSchemasThrow) {
  CHECK_THROWS(FeatureTable(Schema(KeyKind::kInt64, 0, 10)), rtml::InputError);
  CHECK_THROWS(FeatureTable(Schema(KeyKind::kInt64, 1, 0)), rtml::InputError);
  TableSchema s = Schema(KeyKind::kString, 1, 10);
  s.max_key_bytes = 0;
  CHECK_THROWS(FeatureTable(s), rtml::InputError);
}
// A writer reviving its key's tombstone and another key's writer claiming that
// same tombstone as a free slot must not both win: the claim is a CAS on the
// meta word taken without the record lock, so the revive must CAS too. Each
// thread owns its keys (so stripes differ) and erases and re-inserts them in a
// loop over a table exactly as big as the key set: any double win leaks a unit
// of capacity (kFull) or loses a key.
RTML_TEST(ReviveAndClaimOfOneTombstoneNeverBothWin) {
  constexpr int kThreads = 4;
  constexpr int64_t kKeysPerThread = 4;
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  constexpr int64_t kRounds = 20'000;
#else
  constexpr int64_t kRounds = 400'000;
#endif
  FeatureTable t(Schema(KeyKind::kInt64, 2, kThreads * kKeysPerThread));
  std::atomic<int64_t> refused{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < kThreads; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937_64 rng(static_cast<uint64_t>(w) + 7);
      for (int64_t r = 1; r <= kRounds; ++r) {
        const int64_t k = w * kKeysPerThread + static_cast<int64_t>(rng() % kKeysPerThread);
        if (rng() % 2 == 0) (void)t.Erase(Key::Int(k));
        const double vals[2] = {static_cast<double>(k), static_cast<double>(r)};
        if (t.Upsert(Key::Int(k), vals, r) != TableStatus::kOk) refused.fetch_add(1);
      }
      // Leave every owned key present with a known value.
      for (int64_t k = w * kKeysPerThread; k < (w + 1) * kKeysPerThread; ++k) {
        const double vals[2] = {static_cast<double>(k), -1.0};
        (void)t.Erase(Key::Int(k));
        if (t.Upsert(Key::Int(k), vals, 0) != TableStatus::kOk) refused.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(refused.load() == 0);
  CHECK(t.Size() == static_cast<uint64_t>(kThreads * kKeysPerThread));
  for (int64_t k = 0; k < kThreads * kKeysPerThread; ++k) {
    double out[2] = {0, 0};
    int64_t ev = 0;
    CHECK(t.Get(Key::Int(k), 0, out, &ev) == TableStatus::kOk);
    CHECK(out[0] == static_cast<double>(k) && out[1] == -1.0);
  }
  if (refused.load() != 0) std::printf("  %lld writes refused\n", static_cast<long long>(refused.load()));
}


// Writers store records whose fields are (e, e + 1, ..., e + 7) for event e;
// readers (one through Get, one through GetMany) check that invariant on every
// copy they get. A torn read (fields
// from two writes) breaks it. Writers also erase and re-insert keys so claims,
// tombstones and reuse race with reads, and a sweeper deletes as it goes.
RTML_TEST(ConcurrentReadersNeverSeeATornRecord) {
  constexpr uint32_t kFields = 8;
  constexpr int64_t kKeys = 64;
  FeatureTable t(Schema(KeyKind::kString, kFields, kKeys, /*ttl=*/1'000'000'000));
  std::atomic<int64_t> clock{1};
  std::atomic<bool> stop{false};
  std::atomic<int64_t> violations{0};
  // Writer refusals are counted apart from torn reads, by status, so a failure
  // says which it was.
  std::atomic<int64_t> refused[8] = {};
  std::atomic<int64_t> hits{0};
  auto key_of = [](int64_t k) { return "key-" + std::to_string(k); };
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937_64 rng(static_cast<uint64_t>(w) + 1);
      double vals[kFields];
      while (!stop.load(std::memory_order_relaxed)) {
        const int64_t k = static_cast<int64_t>(rng() % kKeys);
        const std::string key = key_of(k);
        if (rng() % 16 == 0) {
          (void)t.Erase(Key::Str(key));
          continue;
        }
        const int64_t e = clock.fetch_add(1, std::memory_order_relaxed);
        for (uint32_t f = 0; f < kFields; ++f) vals[f] = static_cast<double>(e + f);
        const TableStatus st = t.Upsert(Key::Str(key), vals, e);
        if (st != TableStatus::kOk && st != TableStatus::kStale) refused[static_cast<int>(st) & 7].fetch_add(1);
      }
    });
  }
  threads.emplace_back([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      (void)t.Sweep(clock.load(std::memory_order_relaxed) - 200'000);  // events count as ns here
      std::this_thread::yield();
    }
  });
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&, r] {
      std::mt19937_64 rng(100 + static_cast<uint64_t>(r));
      double out[kFields];
      int64_t ev = 0;
      std::vector<std::string> keys;
      for (int64_t k = 0; k < kKeys; ++k) keys.push_back(key_of(k));
      auto check = [&](const double* row, int64_t row_ev) {
        hits.fetch_add(1, std::memory_order_relaxed);
        bool ok = row[0] == static_cast<double>(row_ev);
        for (uint32_t f = 1; f < kFields; ++f) ok = ok && row[f] == row[0] + f;
        if (!ok) violations.fetch_add(1);
      };
      if (r == 0) {  // single Get calls
        for (int64_t i = 0; i < kStressReads / 2; ++i) {
          if (t.Get(Key::Str(keys[rng() % kKeys]), 0, out, &ev) == TableStatus::kOk) check(out, ev);
        }
        return;
      }
      // GetMany in batches longer than its prefetch distance
      constexpr size_t kBatch = 3 * FeatureTable::kGetManyAhead + 1;
      Key batch[kBatch];
      double rows[kBatch * kFields];
      int64_t evs[kBatch];
      TableStatus sts[kBatch];
      for (int64_t i = 0; i < kStressReads / 2; i += kBatch) {
        for (auto& k : batch) k = Key::Str(keys[rng() % kKeys]);
        t.GetMany(batch, kBatch, 0, rows, evs, sts);
        for (size_t b = 0; b < kBatch; ++b) {
          if (sts[b] == TableStatus::kOk) check(rows + b * kFields, evs[b]);
        }
      }
    });
  }
  for (auto& r : readers) r.join();
  stop.store(true);
  for (auto& th : threads) th.join();
  CHECK(violations.load() == 0);
  for (int st = 0; st < 8; ++st) {
    if (refused[st].load() != 0) std::printf("  writers refused with status %d: %lld times\n", st,
                                            static_cast<long long>(refused[st].load()));
    CHECK(refused[st].load() == 0);
  }
  CHECK(hits.load() > 0);
  // No key is stored twice, and Size agrees with what a scan finds.
  std::map<std::string, int> count;
  t.ForEach(0, [&](const Key& k, const double*, int64_t) { ++count[std::string(k.s)]; });
  uint64_t total = 0;
  for (const auto& [k, n] : count) {
    CHECK(n == 1);
    total += static_cast<uint64_t>(n);
  }
  CHECK(total == t.Size());
  std::printf("  %lld reads, %lld hits, %lld invariant violations\n",
              static_cast<long long>(kStressReads), static_cast<long long>(hits.load()),
              static_cast<long long>(violations.load()));
}

RTML_TEST_MAIN()

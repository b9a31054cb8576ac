// Random reads per second from one FeatureTable reader thread, through single
// Get calls and through GetMany batches, alone and then with 1 concurrent writer
// thread updating random keys. Every read is of a random key among all keys
// (string keys "card-<i>"); the key choice (a splitmix64 step) is timed too.
// Per-batch ns/read are reported as p50 / p99 over batches.
//   table_bench [keys] [fields] [seconds per case] [batch]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "rtml/feature_table.h"

namespace {

// splitmix64: a cheap, fixed-seed key chooser, so the reads dominate the timing.
struct KeyChooser {
  uint64_t state;
  size_t Below(size_t n) {
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return static_cast<size_t>((static_cast<unsigned __int128>(z) * n) >> 64);
  }
};

double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[static_cast<size_t>(q * static_cast<double>(v.size() - 1))];
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t keys = argc > 1 ? std::atoll(argv[1]) : 100000;
  const uint32_t fields = argc > 2 ? static_cast<uint32_t>(std::atoi(argv[2])) : 8;
  const double seconds = argc > 3 ? std::atof(argv[3]) : 1.0;
  const size_t batch = argc > 4 ? static_cast<size_t>(std::atoll(argv[4])) : 1000;
  rtml::TableSchema s;
  s.key_kind = rtml::KeyKind::kString;
  s.num_fields = fields;
  s.capacity = static_cast<uint64_t>(keys);
  s.max_key_bytes = 16;
  rtml::FeatureTable t(s);
  std::vector<std::string> names;
  for (int64_t k = 0; k < keys; ++k) names.push_back("card-" + std::to_string(k));
  std::vector<double> v(fields, 1.0);
  for (int64_t k = 0; k < keys; ++k) (void)t.Upsert(rtml::Key::Str(names[k]), v.data(), 1);
  for (int writers = 0; writers <= 1; ++writers) {
    std::atomic<bool> stop{false};
    std::atomic<int64_t> writes{0};
    std::thread w;
    if (writers) {
      w = std::thread([&] {
        std::mt19937_64 rng(1);
        std::vector<double> vals(fields);
        int64_t e = 2;
        while (!stop.load(std::memory_order_relaxed)) {
          for (auto& x : vals) x = static_cast<double>(e);
          (void)t.Upsert(rtml::Key::Str(names[rng() % names.size()]), vals.data(), e++);
          writes.fetch_add(1, std::memory_order_relaxed);
        }
      });
    }
    for (const bool batched : {false, true}) {
      KeyChooser choose{2};
      std::vector<rtml::Key> ks(batch);
      std::vector<double> out(batch * fields);
      std::vector<int64_t> ev(batch);
      std::vector<rtml::TableStatus> st(batch);
      std::vector<double> ns_per_read;
      int64_t reads = 0;
      int64_t hits = 0;
      const int64_t writes0 = writes.load();
      const auto t0 = std::chrono::steady_clock::now();
      auto last = t0;
      double elapsed = 0;
      while (elapsed < seconds) {
        for (auto& k : ks) k = rtml::Key::Str(names[choose.Below(names.size())]);
        if (batched) {
          t.GetMany(ks.data(), batch, 0, out.data(), ev.data(), st.data());
        } else {
          for (size_t i = 0; i < batch; ++i) st[i] = t.Get(ks[i], 0, &out[i * fields], &ev[i]);
        }
        for (const auto x : st) hits += x == rtml::TableStatus::kOk;
        reads += static_cast<int64_t>(batch);
        const auto now = std::chrono::steady_clock::now();
        ns_per_read.push_back(std::chrono::duration<double, std::nano>(now - last).count() /
                              static_cast<double>(batch));
        last = now;
        elapsed = std::chrono::duration<double>(now - t0).count();
      }
      char writer_text[64] = "";
      if (writers) {
        std::snprintf(writer_text, sizeof(writer_text), ", writer %.1fM writes/s",
                      static_cast<double>(writes.load() - writes0) / elapsed / 1e6);
      }
      std::printf("%-7s (batches of %zu), %d writer: %5.1fM reads/s; ns/read p50 %.0f p99 %.0f; "
                  "hits %.0f%%%s\n",
                  batched ? "GetMany" : "Get", batch, writers,
                  static_cast<double>(reads) / elapsed / 1e6, Percentile(ns_per_read, 0.5),
                  Percentile(ns_per_read, 0.99),
                  100.0 * static_cast<double>(hits) / static_cast<double>(reads), writer_text);
    }
    stop.store(true);
    if (w.joinable()) w.join();
  }
  return 0;
}

// Reads per second from one FeatureTable thread, with 0 and then 1 concurrent
// writer thread updating the same keys.
//   table_bench [keys] [fields] [seconds per case]
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "rtml/feature_table.h"

int main(int argc, char** argv) {
  const int64_t keys = argc > 1 ? std::atoll(argv[1]) : 100000;
  const uint32_t fields = argc > 2 ? static_cast<uint32_t>(std::atoi(argv[2])) : 8;
  const double seconds = argc > 3 ? std::atof(argv[3]) : 1.0;
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
    std::mt19937_64 rng(2);
    std::vector<double> out(fields);
    int64_t reads = 0;
    int64_t ev = 0;
    const auto t0 = std::chrono::steady_clock::now();
    double elapsed = 0;
    while (elapsed < seconds) {
      for (int i = 0; i < 4096; ++i) {
        (void)t.Get(rtml::Key::Str(names[rng() % names.size()]), 0, out.data(), &ev);
      }
      reads += 4096;
      elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    stop.store(true);
    if (w.joinable()) w.join();
    std::printf("%lld keys, %u fields, %d writer(s): %.1fM reads/s (%.0f ns/read)%s\n",
                static_cast<long long>(keys), fields, writers, reads / elapsed / 1e6,
                elapsed / static_cast<double>(reads) * 1e9,
                writers ? (", " + std::to_string(writes.load()) + " writes").c_str() : "");
  }
  return 0;
}

// Cost of one record into rtml's metrics, on 1 and 2 threads, beside a peer: the
// same buckets behind a std::mutex (what a plain "lock, ++bucket" histogram costs).
//   cmake --build build -j2 --target metrics_bench && ./build/metrics_bench
// Prints p50/p99 over batches of 100k records of ns per record (fixed seed).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "rtml/metrics.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kBatches = 100;
constexpr std::size_t kBatch = 100'000;

struct MutexHistogram {
  std::mutex mu;
  std::vector<uint64_t> counts = std::vector<uint64_t>(rtml::LatencyHistogram::kBuckets);
  uint64_t sum = 0;
  void Record(int64_t ns) {
    std::lock_guard<std::mutex> lock(mu);
    ++counts[rtml::LatencyHistogram::BucketOf(std::min(ns, rtml::LatencyHistogram::kMaxValue))];
    sum += static_cast<uint64_t>(ns);
  }
};

// Runs fn(values, thread) on `threads` threads, each over its own batch; returns
// the ns per record of each batch (wall time of the slowest thread / batch).
template <typename Fn>
std::vector<double> Run(int threads, const std::vector<int64_t>& values, Fn fn) {
  std::vector<double> per;
  for (int b = 0; b < kBatches; ++b) {
    std::vector<std::thread> ts;
    const auto t0 = Clock::now();
    for (int t = 0; t < threads; ++t) ts.emplace_back([&, t] { fn(values, t); });
    for (auto& t : ts) t.join();
    const double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
    per.push_back(ns / static_cast<double>(kBatch));
  }
  std::sort(per.begin(), per.end());
  return per;
}

void Print(const char* what, int threads, const std::vector<double>& per) {
  std::printf("%-44s threads=%d  p50 %6.2f ns  p99 %6.2f ns per record\n", what, threads,
              per[per.size() / 2], per[per.size() * 99 / 100]);
}

}  // namespace

int main() {
  std::mt19937_64 rng(42);
  std::lognormal_distribution<double> d(std::log(20'000.0), 1.0);
  std::vector<int64_t> values(kBatch);
  for (auto& v : values) v = static_cast<int64_t>(d(rng));
  std::vector<double> scores(kBatch);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (auto& s : scores) s = u(rng);

  for (int threads : {1, 2}) {
    rtml::LatencyHistogram h;
    Print("LatencyHistogram::Record", threads, Run(threads, values, [&](const std::vector<int64_t>& v, int) {
            for (int64_t x : v) h.Record(x);
          }));
    MutexHistogram m;
    Print("peer: mutex + same buckets", threads, Run(threads, values, [&](const std::vector<int64_t>& v, int) {
            for (int64_t x : v) m.Record(x);
          }));
    auto vh = rtml::ValueHistogram::Uniform(0.0, 1.0, 100);
    Print("ValueHistogram::Record (100 uniform bins)", threads,
          Run(threads, values, [&](const std::vector<int64_t>&, int) {
            for (double s : scores) vh->Record(s);
          }));
    rtml::Counter c;
    Print("Counter::Add", threads, Run(threads, values, [&](const std::vector<int64_t>& v, int) {
            for (std::size_t i = 0; i < v.size(); ++i) c.Add();
          }));
    rtml::CounterArray a({"f0", "f1", "f2", "f3"});
    Print("CounterArray::Add (thread t -> counter t)", threads,
          Run(threads, values, [&](const std::vector<int64_t>& v, int t) {
            for (std::size_t i = 0; i < v.size(); ++i) a.Add(static_cast<std::size_t>(t));
          }));
  }
  return 0;
}

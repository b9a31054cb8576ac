// ns per observed row of DriftMonitor for F features x 10 bins (9 inner edges)
// plus the score, through single Observe calls and ObserveMany batches, with and
// without sampling, at 1 thread and at T threads (aggregate rows/s); beside a
// naive peer in the same run: std::upper_bound + one relaxed fetch_add per
// feature on shared counters (what a first version would write).
// Rows are N(0, 1) float32 with 2% NaN, fixed seed; edges are the normal's
// deciles. ns/row are thread CPU time, p50 / p99 over repetitions of one pass
// over the rows (each thread makes its own pass over the same rows).
//   drift_bench [features] [rows] [reps] [threads]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <thread>
#include <time.h>
#include <vector>

#include "rtml/drift.h"

namespace {

double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[static_cast<size_t>(q * static_cast<double>(v.size() - 1))];
}

const std::vector<double> kDeciles = {-1.2816, -0.8416, -0.5244, -0.2533, 0.0, 0.2533, 0.5244, 0.8416, 1.2816};

// The naive peer.
class NaiveMonitor {
 public:
  explicit NaiveMonitor(size_t features)
      : features_(features), edges_(kDeciles.begin(), kDeciles.end()), counts_(features * 11 + 11) {}
  void Observe(const float* row, double score) {
    for (size_t f = 0; f < features_; ++f) {
      const float x = row[f];
      const size_t bin = std::isnan(x) ? 10 : std::upper_bound(edges_.begin(), edges_.end(), x) - edges_.begin();
      counts_[f * 11 + bin].fetch_add(1, std::memory_order_relaxed);
    }
    const size_t sb = std::upper_bound(kDeciles.begin(), kDeciles.end(), score) - kDeciles.begin();
    counts_[features_ * 11 + sb].fetch_add(1, std::memory_order_relaxed);
  }

 private:
  size_t features_;
  std::vector<float> edges_;
  std::vector<std::atomic<uint64_t>> counts_;
};

double ThreadCpuNs() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e9 + static_cast<double>(t.tv_nsec);
}

// Runs pass(thread) on `threads` threads `reps` times. Prints the CPU ns one
// thread spends per row (thread CPU time, so that other processes on a shared
// machine do not inflate it) and the wall-clock rows/s of all threads together.
void Report(const char* name, size_t rows, int reps, int threads, const std::function<void(int)>& pass) {
  std::vector<double> cpu_ns;
  std::vector<double> wall_ns;
  for (int r = 0; r < reps; ++r) {
    std::vector<double> spent(threads);
    auto timed = [&](int t) {
      const double c0 = ThreadCpuNs();
      pass(t);
      spent[t] = ThreadCpuNs() - c0;
    };
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> ts;
    for (int t = 1; t < threads; ++t) ts.emplace_back(timed, t);
    timed(0);
    for (auto& th : ts) th.join();
    wall_ns.push_back(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count());
    double sum = 0;
    for (const double s : spent) sum += s;
    cpu_ns.push_back(sum / static_cast<double>(rows * threads));
  }
  std::printf("%-42s threads=%d  cpu ns/row p50 %6.1f p99 %6.1f  wall %6.2f M rows/s\n", name, threads,
              Percentile(cpu_ns, 0.5), Percentile(cpu_ns, 0.99),
              static_cast<double>(rows * threads) * 1e3 / Percentile(wall_ns, 0.5));
}

}  // namespace

int main(int argc, char** argv) {
  const size_t features = argc > 1 ? static_cast<size_t>(std::atoll(argv[1])) : 30;
  const size_t rows = argc > 2 ? static_cast<size_t>(std::atoll(argv[2])) : 100000;
  const int reps = argc > 3 ? std::atoi(argv[3]) : 50;
  const int max_threads = argc > 4 ? std::atoi(argv[4]) : 2;
  std::mt19937_64 rng(42);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> unit;
  std::vector<float> x(rows * features);
  std::vector<double> scores(rows);
  for (auto& v : x) v = unit(rng) < 0.02f ? NAN : normal(rng);
  for (auto& s : scores) s = normal(rng);

  auto spec = [&](uint32_t sample_every) {
    rtml::DriftSpec s;
    rtml::DriftBins b{kDeciles, std::vector<double>(10, 0.098)};
    b.reference.push_back(0.02);
    s.features.assign(features, b);
    s.score = {kDeciles, std::vector<double>(10, 0.1)};
    s.score.reference.push_back(0.0);
    s.sample_every = sample_every;
    return s;
  };
  std::printf("drift_bench: %zu features x 10 bins + score, %zu rows, %d reps\n", features, rows, reps);
  for (int threads = 1; threads <= max_threads; threads *= 2) {
    {
      rtml::DriftMonitor m(spec(1));
      Report("rtml Observe (one row a call)", rows, reps, threads, [&](int) {
        for (size_t i = 0; i < rows; ++i) (void)m.Observe(&x[i * features], features, scores[i]);
      });
      Report("rtml ObserveMany (batches of 256)", rows, reps, threads, [&](int) {
        for (size_t i = 0; i < rows; i += 256) {
          (void)m.ObserveMany(&x[i * features], std::min<size_t>(256, rows - i), features, &scores[i]);
        }
      });
    }
    {
      rtml::DriftMonitor m(spec(10));
      Report("rtml Observe, sample_every=10", rows, reps, threads, [&](int) {
        for (size_t i = 0; i < rows; ++i) (void)m.Observe(&x[i * features], features, scores[i]);
      });
      Report("rtml ObserveMany (256), sample_every=10", rows, reps, threads, [&](int) {
        for (size_t i = 0; i < rows; i += 256) {
          (void)m.ObserveMany(&x[i * features], std::min<size_t>(256, rows - i), features, &scores[i]);
        }
      });
    }
    {
      NaiveMonitor naive(features);
      Report("peer: upper_bound + shared fetch_add", rows, reps, threads, [&](int) {
        for (size_t i = 0; i < rows; ++i) naive.Observe(&x[i * features], scores[i]);
      });
    }
  }
  return 0;
}

// Times Forest::Predict on a compiled model file, with no Python in the way.
//   forest_bench MODEL.rtml [rows] [threads] [repeats]
// Rows are uniform in [0, 1) (seeded); prints the median ns per row.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "rtml/forest.h"

static int Run(int argc, char** argv);

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const rtml::Error& e) {
    std::fprintf(stderr, "forest_bench: %s\n", e.what());
    return 1;
  }
}

static int Run(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL.rtml [rows] [threads] [repeats]\n", argv[0]);
    return 2;
  }
  const rtml::Forest f = rtml::Forest::Load(argv[1]);
  const int64_t rows = argc > 2 ? std::atoll(argv[2]) : 100000;
  const int threads = argc > 3 ? std::atoi(argv[3]) : 1;
  const int repeats = argc > 4 ? std::atoi(argv[4]) : 7;
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows * f.num_features()));
  for (auto& v : x) v = u(rng);
  std::vector<double> out(static_cast<size_t>(rows * f.num_columns(false)));
  const rtml::MatrixView view{x.data(), rows, f.num_features(), f.num_features(), 1,
                              rtml::DType::kFloat32};
  std::vector<double> ns;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    if (f.Predict(view, out.data(), false, threads) != rtml::Status::kOk) return 1;
    const auto t1 = std::chrono::steady_clock::now();
    ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(rows));
  }
  std::sort(ns.begin(), ns.end());
  const double med = ns[ns.size() / 2];
  if (std::getenv("RTML_BENCH_MIN")) std::printf("min %.1f ns/row\n", ns.front());
  std::printf("%d trees, %zu nodes, max depth %d: median %.1f ns/row (%.2fM rows/s), %d thread(s)\n",
              f.num_trees(), f.num_nodes(), f.max_depth(), med, 1e3 / med, threads);
  return 0;
}

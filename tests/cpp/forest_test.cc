// Unit tests of rtml::Forest: comparison rewriting, NaN defaults, categorical
// splits, output transforms, the compiled file, and concurrent scoring.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#include "../../core/src/forest/walk_simd.h"
#include "check.h"
#include "rtml/forest.h"

using rtml::CompareOp;
using rtml::DType;
using rtml::Forest;
using rtml::ForestSpec;
using rtml::MatrixView;
using rtml::TreeSpec;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

// A stump on feature `feat`: (x op thr) -> left leaf `lv`, else right leaf `rv`.
TreeSpec Stump(int32_t feat, CompareOp op, double thr, bool default_left, double lv, double rv) {
  TreeSpec t;
  t.node_type = {1, 0, 0};
  t.left = {1, -1, -1};
  t.right = {2, -1, -1};
  t.feature = {feat, -1, -1};
  t.threshold = {thr, 0, 0};
  t.cmp = {static_cast<int8_t>(op), 0, 0};
  t.default_left = {static_cast<uint8_t>(default_left), 0, 0};
  t.category_list_right_child = {0, 0, 0};
  t.leaf_value = {0, lv, rv};
  t.leaf_vector_begin = {0, 0, 0};
  t.leaf_vector_end = {0, 0, 0};
  t.category_list_begin = {0, 0, 0};
  t.category_list_end = {0, 0, 0};
  return t;
}

ForestSpec OneTree(TreeSpec t, int32_t num_feature = 1) {
  ForestSpec s;
  s.num_feature = num_feature;
  s.base_scores = {0.0};
  s.trees.push_back(std::move(t));
  return s;
}

double Score1(const Forest& f, double x, DType dtype) {
  double out = 0;
  MatrixView v;
  float xf = static_cast<float>(x);
  v.data = dtype == DType::kFloat32 ? static_cast<const void*>(&xf) : static_cast<const void*>(&x);
  v.rows = 1;
  v.cols = 1;
  v.dtype = dtype;
  CHECK(f.Predict(v, &out, true, 1) == rtml::Status::kOk);
  return out;
}

}  // namespace

RTML_TEST(LessThanFloat32Threshold) {
  const Forest f = Forest::Build(OneTree(Stump(0, CompareOp::kLT, 0.5, true, 1.0, 2.0)));
  CHECK(Score1(f, 0.5, DType::kFloat32) == 2.0);
  CHECK(Score1(f, std::nextafter(0.5f, 0.0f), DType::kFloat32) == 1.0);
  CHECK(Score1(f, kNaN, DType::kFloat32) == 1.0);  // default left
  CHECK(Score1(f, -std::numeric_limits<double>::infinity(), DType::kFloat32) == 1.0);
}

RTML_TEST(GreaterOpsSwapChildren) {
  const Forest gt = Forest::Build(OneTree(Stump(0, CompareOp::kGT, 0.5, false, 1.0, 2.0)));
  CHECK(Score1(gt, 0.5, DType::kFloat32) == 2.0);
  CHECK(Score1(gt, std::nextafter(0.5f, 1.0f), DType::kFloat32) == 1.0);
  CHECK(Score1(gt, kNaN, DType::kFloat32) == 2.0);  // default right
  const Forest ge = Forest::Build(OneTree(Stump(0, CompareOp::kGE, 0.5, true, 1.0, 2.0)));
  CHECK(Score1(ge, 0.5, DType::kFloat32) == 1.0);
  CHECK(Score1(ge, std::nextafter(0.5f, 0.0f), DType::kFloat32) == 2.0);
  CHECK(Score1(ge, kNaN, DType::kFloat32) == 1.0);
}

RTML_TEST(Float64ThresholdIsExactForBothInputPrecisions) {
  ForestSpec s = OneTree(Stump(0, CompareOp::kLE, 0.1, false, 1.0, 2.0));
  s.precision = rtml::Precision::kFloat64;
  const Forest f = Forest::Build(s);
  // float(0.1) is 0.100000001490116..., above the double 0.1.
  CHECK(Score1(f, 0.1f, DType::kFloat32) == 2.0);
  CHECK(Score1(f, std::nextafter(0.1f, 0.0f), DType::kFloat32) == 1.0);
  CHECK(Score1(f, 0.1, DType::kFloat64) == 1.0);
  CHECK(Score1(f, std::nextafter(0.1, 1.0), DType::kFloat64) == 2.0);
  // A float32-precision model casts float64 inputs to float first.
  s.precision = rtml::Precision::kFloat32;
  const Forest g = Forest::Build(s);
  CHECK(Score1(g, 0.1, DType::kFloat64) == 2.0);
}

RTML_TEST(CategoricalSplit) {
  TreeSpec t = Stump(0, CompareOp::kNone, 0.0, false, 1.0, 2.0);
  t.node_type[0] = 2;
  t.category_list = {1, 3, 40};
  t.category_list_begin = {0, 3, 3};
  t.category_list_end = {3, 3, 3};
  const Forest f = Forest::Build(OneTree(t));
  CHECK(Score1(f, 3, DType::kFloat32) == 1.0);
  CHECK(Score1(f, 40.7, DType::kFloat32) == 1.0);  // truncated to 40
  CHECK(Score1(f, 2, DType::kFloat32) == 2.0);
  CHECK(Score1(f, -1, DType::kFloat32) == 2.0);
  CHECK(Score1(f, 1e9, DType::kFloat64) == 2.0);
  CHECK(Score1(f, kNaN, DType::kFloat32) == 2.0);  // default right
  t.category_list_right_child = {1, 0, 0};
  const Forest r = Forest::Build(OneTree(t));
  CHECK(Score1(r, 3, DType::kFloat32) == 2.0);
  CHECK(Score1(r, 2, DType::kFloat32) == 1.0);
}

RTML_TEST(SoftmaxOverClasses) {
  ForestSpec s;
  s.num_feature = 1;
  s.num_class = {3};
  s.postprocessor = rtml::Postprocessor::kSoftmax;
  s.base_scores = {0.5, 0.5, 0.5};
  for (int32_t k = 0; k < 3; ++k) {
    TreeSpec t = Stump(0, CompareOp::kLT, 0.0, true, k, -k);
    t.class_id = k;
    s.trees.push_back(t);
  }
  const Forest f = Forest::Build(s);
  CHECK(f.num_columns(false) == 3);
  const float x = 1.0f;
  MatrixView v{&x, 1, 1, 1, 1, DType::kFloat32};
  double out[3];
  CHECK(f.Predict(v, out, false, 1) == rtml::Status::kOk);
  const double z = std::exp(0.0) + std::exp(-1.0) + std::exp(-2.0);
  CHECK(std::fabs(out[0] - 1.0 / z) < 1e-12);
  CHECK(std::fabs(out[2] - std::exp(-2.0) / z) < 1e-12);
  CHECK(f.Predict(v, out, true, 1) == rtml::Status::kOk);
  CHECK(out[1] == 0.5 - 1.0);
}

RTML_TEST(AveragedLeafVectors) {
  ForestSpec s;
  s.num_feature = 1;
  s.num_class = {2};
  s.leaf_vector_shape = {1, 2};
  s.average_tree_output = true;
  s.base_scores = {0.0, 0.0};
  for (int i = 0; i < 2; ++i) {
    TreeSpec t = Stump(0, CompareOp::kLT, 0.0, true, 0, 0);
    t.leaf_vector = {0.2, 0.8, 0.6, 0.4};
    t.leaf_vector_begin = {0, 0, 2};
    t.leaf_vector_end = {0, 2, 4};
    t.class_id = -1;
    if (i == 1) t.threshold[0] = 10.0;
    s.trees.push_back(t);
  }
  const Forest f = Forest::Build(s);
  const float x = 1.0f;  // tree 0 goes right (0.6, 0.4), tree 1 left (0.2, 0.8)
  MatrixView v{&x, 1, 1, 1, 1, DType::kFloat32};
  double out[2];
  CHECK(f.Predict(v, out, false, 1) == rtml::Status::kOk);
  CHECK(std::fabs(out[0] - 0.4) < 1e-12 && std::fabs(out[1] - 0.6) < 1e-12);
}

namespace {

// A random forest of depth-limited trees over `nf` features, for round trips
// and threading.
ForestSpec RandomForest(uint32_t seed, int32_t nf, int n_trees) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  ForestSpec s;
  s.num_feature = nf;
  s.base_scores = {0.25};
  s.postprocessor = rtml::Postprocessor::kSigmoid;
  for (int i = 0; i < n_trees; ++i) {
    // A complete tree of depth 1 + (i % 4), nodes in breadth-first order.
    const int depth = 1 + i % 4;
    const int n = (1 << (depth + 1)) - 1;
    TreeSpec t;
    for (int j = 0; j < n; ++j) {
      const bool leaf = j >= (1 << depth) - 1;
      t.node_type.push_back(leaf ? 0 : 1);
      t.left.push_back(leaf ? -1 : 2 * j + 1);
      t.right.push_back(leaf ? -1 : 2 * j + 2);
      t.feature.push_back(leaf ? -1 : static_cast<int32_t>(rng() % nf));
      t.threshold.push_back(u(rng));
      t.cmp.push_back(static_cast<int8_t>(CompareOp::kLT) + static_cast<int8_t>(rng() % 4));
      t.default_left.push_back(static_cast<uint8_t>(rng() % 2));
      t.category_list_right_child.push_back(0);
      t.leaf_value.push_back(u(rng) - 0.5);
    }
    s.trees.push_back(t);
  }
  return s;
}

// Unbalanced random trees up to max_depth deep (beyond the level layout's 8),
// spread over num_class outputs: the gather kernel's path, with early exit.
ForestSpec RandomDeepForest(uint32_t seed, int32_t nf, int n_trees, int max_depth, int32_t num_class) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  ForestSpec s;
  s.num_feature = nf;
  s.num_class = {num_class};
  s.base_scores.assign(static_cast<size_t>(num_class), 0.5);
  for (int i = 0; i < n_trees; ++i) {
    TreeSpec t;
    t.class_id = i % num_class;
    // Grow breadth-first: node j splits with probability 0.8 until max_depth.
    std::vector<int> depth_of{0};
    for (size_t j = 0; j < depth_of.size(); ++j) {
      const bool split = depth_of[j] < max_depth && (j == 0 || u(rng) < 0.8);
      t.node_type.push_back(split ? 1 : 0);
      t.feature.push_back(split ? static_cast<int32_t>(rng() % nf) : -1);
      t.threshold.push_back(u(rng));
      t.cmp.push_back(static_cast<int8_t>(CompareOp::kLT) + static_cast<int8_t>(rng() % 4));
      t.default_left.push_back(static_cast<uint8_t>(rng() % 2));
      t.category_list_right_child.push_back(0);
      t.leaf_value.push_back(u(rng) - 0.5);
      if (split) {
        t.left.push_back(static_cast<int32_t>(depth_of.size()));
        depth_of.push_back(depth_of[j] + 1);
        t.right.push_back(static_cast<int32_t>(depth_of.size()));
        depth_of.push_back(depth_of[j] + 1);
      } else {
        t.left.push_back(-1);
        t.right.push_back(-1);
      }
    }
    s.trees.push_back(t);
  }
  return s;
}

std::vector<float> RandomRows(uint32_t seed, int64_t rows, int32_t nf) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows * nf));
  for (auto& v : x) v = (rng() % 17 == 0) ? std::numeric_limits<float>::quiet_NaN() : u(rng);
  return x;
}

}  // namespace

RTML_TEST(FileRoundTripAndEveryPrefixAndByteFlipRejected) {
  const Forest f = Forest::Build(RandomForest(1, 3, 6));
  const std::string bytes = f.ToBytes();
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const Forest g = Forest::FromBytes(p, bytes.size());
  const std::vector<float> x = RandomRows(2, 100, 3);
  MatrixView v{x.data(), 100, 3, 3, 1, DType::kFloat32};
  std::vector<double> a(100), b(100);
  CHECK(f.Predict(v, a.data(), false, 1) == rtml::Status::kOk);
  CHECK(g.Predict(v, b.data(), false, 1) == rtml::Status::kOk);
  CHECK(a == b);
  CHECK(g.ToBytes() == bytes);
  for (size_t n = 0; n < bytes.size(); ++n) {
    CHECK_THROWS(Forest::FromBytes(p, n), rtml::ModelFormatError);
  }
  std::string bad = bytes;
  for (size_t i = 0; i < bad.size(); ++i) {
    bad[i] = static_cast<char>(bad[i] ^ 0x5A);
    CHECK_THROWS(Forest::FromBytes(reinterpret_cast<const uint8_t*>(bad.data()), bad.size()),
                 rtml::ModelFormatError);
    bad[i] = bytes[i];
  }
}

RTML_TEST(StridedViewsMatchContiguous) {
  const Forest f = Forest::Build(RandomForest(3, 4, 20));
  const int64_t rows = 300;
  const std::vector<float> x = RandomRows(4, rows, 4);
  std::vector<double> xd(x.begin(), x.end());
  std::vector<float> fortran(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int c = 0; c < 4; ++c) fortran[c * rows + r] = x[r * 4 + c];
  }
  std::vector<double> a(rows), b(rows), c(rows);
  CHECK(f.Predict({x.data(), rows, 4, 4, 1, DType::kFloat32}, a.data(), false, 1) == rtml::Status::kOk);
  CHECK(f.Predict({fortran.data(), rows, 4, 1, rows, DType::kFloat32}, b.data(), false, 1) ==
        rtml::Status::kOk);
  CHECK(f.Predict({xd.data(), rows, 4, 4, 1, DType::kFloat64}, c.data(), false, 1) == rtml::Status::kOk);
  CHECK(a == b);
  CHECK(a == c);
  CHECK(f.Predict({x.data(), rows, 3, 3, 1, DType::kFloat32}, a.data(), false, 1) ==
        rtml::Status::kBadShape);
}

RTML_TEST(ThreadsAndConcurrentCallersAgree) {
  const Forest f = Forest::Build(RandomForest(5, 6, 40));
  const int64_t rows = 20000;
  const std::vector<float> x = RandomRows(6, rows, 6);
  const MatrixView v{x.data(), rows, 6, 6, 1, DType::kFloat32};
  std::vector<double> want(rows);
  CHECK(f.Predict(v, want.data(), false, 1) == rtml::Status::kOk);
  std::vector<std::vector<double>> got(4, std::vector<double>(rows));
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&, t] { (void)f.Predict(v, got[t].data(), false, 2); });
  }
  for (auto& th : callers) th.join();
  for (const auto& g : got) CHECK(g == want);
}

RTML_TEST(VectorKernelMatchesScalarKernelBitForBit) {
  // Odd row counts exercise the short last group of 16; NaNs the default paths.
  const Forest f = Forest::Build(RandomForest(7, 9, 37));
  for (const int64_t rows : {int64_t{1}, int64_t{7}, int64_t{8}, int64_t{17}, int64_t{64}, int64_t{1013}}) {
    const std::vector<float> x = RandomRows(8, rows, 9);
    const MatrixView v{x.data(), rows, 9, 9, 1, DType::kFloat32};
    std::vector<double> vec(rows), scalar(rows);
    CHECK(f.Predict(v, vec.data(), true, 1) == rtml::Status::kOk);
    rtml::internal::ForceScalarKernel(true);
    CHECK(f.Predict(v, scalar.data(), true, 1) == rtml::Status::kOk);
    rtml::internal::ForceScalarKernel(false);
    CHECK(vec == scalar);
  }
  // Deep, unbalanced trees (gather kernel, early exit), one and three outputs.
  for (const int32_t classes : {1, 3}) {
    const Forest d = Forest::Build(RandomDeepForest(11, 7, 45, 14, classes));
    for (const int64_t rows : {int64_t{1}, int64_t{5}, int64_t{8}, int64_t{40}, int64_t{1000}}) {
      const std::vector<float> x = RandomRows(12, rows, 7);
      const MatrixView v{x.data(), rows, 7, 7, 1, DType::kFloat32};
      std::vector<double> vec(rows * classes), scalar(rows * classes);
      CHECK(d.Predict(v, vec.data(), true, 1) == rtml::Status::kOk);
      rtml::internal::ForceScalarKernel(true);
      CHECK(d.Predict(v, scalar.data(), true, 1) == rtml::Status::kOk);
      rtml::internal::ForceScalarKernel(false);
      CHECK(vec == scalar);
    }
  }
  // The float64 kernel, on a model that compares in float64.
  ForestSpec s = RandomForest(9, 5, 29);
  s.precision = rtml::Precision::kFloat64;
  const Forest g = Forest::Build(s);
  for (const int64_t rows : {int64_t{8}, int64_t{13}, int64_t{1001}}) {
    const std::vector<float> xf = RandomRows(10, rows, 5);
    const std::vector<double> x(xf.begin(), xf.end());
    const MatrixView v{x.data(), rows, 5, 5, 1, DType::kFloat64};
    std::vector<double> vec(rows), scalar(rows);
    CHECK(g.Predict(v, vec.data(), true, 1) == rtml::Status::kOk);
    rtml::internal::ForceScalarKernel(true);
    CHECK(g.Predict(v, scalar.data(), true, 1) == rtml::Status::kOk);
    rtml::internal::ForceScalarKernel(false);
    CHECK(vec == scalar);
  }
  std::printf("  vector kernel available: %s\n",
              rtml::internal::VectorKernelAvailable() ? "yes" : "no (scalar compared with itself)");
}

RTML_TEST(BadSpecsAreRejected) {
  CHECK_THROWS(Forest::Build(OneTree(Stump(5, CompareOp::kLT, 0.5, true, 1, 2))), rtml::InputError);
  CHECK_THROWS(Forest::Build(OneTree(Stump(0, CompareOp::kEQ, 0.5, true, 1, 2))),
               rtml::UnsupportedModelError);
  TreeSpec cyclic = Stump(0, CompareOp::kLT, 0.5, true, 1, 2);
  cyclic.right[0] = 0;
  CHECK_THROWS(Forest::Build(OneTree(cyclic)), rtml::InputError);
  ForestSpec empty;
  empty.num_feature = 1;
  CHECK_THROWS(Forest::Build(empty), rtml::InputError);
}

RTML_TEST_MAIN()

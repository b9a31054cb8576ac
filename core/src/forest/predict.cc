// The Forest evaluator: lock-step tree walks over row blocks, then the output
// transform. Everything here is noexcept and allocation-free after a thread's
// first call (scratch space is thread-local and only grows).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <thread>
#include <type_traits>
#include <vector>

#include "rtml/forest.h"
#include "walk_simd.h"

namespace rtml {
namespace {

using detail::Chunk;
using detail::kCategorical;
using detail::kDefaultFirst;
using detail::kFeatureMask;
using detail::kLanes;
using detail::PayloadOf;
using detail::TreeInfo;

#if defined(__GNUC__)
#define RTML_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define RTML_UNLIKELY(x) (x)
#endif

static_assert(sizeof(detail::NodeF) == 12, "NodeF must stay 12 bytes");
static_assert(sizeof(detail::NodeD) == 16, "NodeD must stay 16 bytes");

constexpr int64_t kBlockRows = 64;
constexpr int64_t kMinRowsPerThread = 4096;
// Below this many rows the scalar kernel's latency beats the vector kernel's.
constexpr int64_t kVectorMinRows = 8;

// treelite's category matching: a value matches when it is a non-negative float
// no larger than 2^24 whose truncation is in the list.
template <typename T, typename Node>
inline bool CategoryThen(T v, const Node& n, const uint32_t* cat_bits, uint32_t ff) {
  if (v != v) return (ff & kDefaultFirst) != 0;
  const T lowest = (ff & detail::kTruncateCategory) ? T(-1) : T(0);
  if (!(v >= lowest) || v == T(-1) || v > T(16777216)) return false;
  const uint32_t c = v < T(0) ? 0u : static_cast<uint32_t>(v);  // (-1, 0) truncates to 0
  const uint32_t off = PayloadOf(n);
  if (c / 32 >= cat_bits[off]) return false;
  return ((cat_bits[off + 1 + c / 32] >> (c % 32)) & 1u) != 0;
}

template <bool kCat, typename T, typename Node>
inline uint32_t Step(const Node* nodes, const uint32_t* cat_bits, const T* x, uint32_t i) {
  const Node& n = nodes[i];
  const uint32_t ff = n.feat_flags;
  const T v = x[kCat ? (ff & kFeatureMask) : ff];
  uint32_t then;
  if (kCat && RTML_UNLIKELY(ff & kCategorical)) {
    then = CategoryThen(v, n, cat_bits, ff) ? 1u : 0u;
  } else {
    // NaN fails the comparison and takes "else", which the build made the
    // default child (see the negated feature slots in build.cc).
    then = static_cast<uint32_t>(v <= static_cast<T>(n.threshold));
  }
  // Select by mask, not by branch: the comparison is data-dependent and a
  // mispredicted branch costs more than the whole step.
  const uint32_t mask = 0u - then;
  return n.other ^ ((n.other ^ (i + 1)) & mask);
}

template <typename Node>
inline void AddLeaf(const TreeInfo& t, const Node& leaf, const double* leaves, double* acc) {
  const uint32_t off = PayloadOf(leaf);
  if (t.leaf_len == 1) {
    acc[t.slot_base] += leaves[off];
  } else {
    for (uint32_t k = 0; k < t.leaf_len; ++k) acc[t.slot_base + k * t.slot_stride] += leaves[off + k];
  }
}

template <bool kCat, typename T, typename Node, int kN>
inline void WalkLanes(const Node* nodes, const uint32_t* cat_bits, const T* x, const TreeInfo* trees,
                      uint32_t depth, const double* leaves, double* acc) {
  uint32_t idx[kN];
  for (int k = 0; k < kN; ++k) idx[k] = trees[k].root;
  for (uint32_t d = 0; d < depth; ++d) {
    for (int k = 0; k < kN; ++k) idx[k] = Step<kCat>(nodes, cat_bits, x, idx[k]);
  }
  for (int k = 0; k < kN; ++k) AddLeaf(trees[k], nodes[idx[k]], leaves, acc);
}

template <bool kCat, typename T, typename Node>
inline void WalkChunk(const Node* nodes, const uint32_t* cat_bits, const T* x, const TreeInfo* trees,
                      const Chunk& c, const double* leaves, double* acc) {
  const TreeInfo* first = trees + c.begin;
  if (c.end - c.begin == kLanes) {
    WalkLanes<kCat, T, Node, kLanes>(nodes, cat_bits, x, first, c.depth, leaves, acc);
    return;
  }
  for (uint32_t k = 0; k < c.end - c.begin; ++k) {
    WalkLanes<kCat, T, Node, 1>(nodes, cat_bits, x, first + k, c.depth, leaves, acc);
  }
}

// LightGBM's kZeroThreshold: the float 1e-35f, compared in double.
constexpr double kLightGBMZero = static_cast<double>(1e-35f);

// What LoadRow needs besides the view: the model's input rules.
struct InputRules {
  bool flush_tiny;
  const uint8_t* feature_rule;      // or nullptr
  const uint32_t* known_categories; // or nullptr
};

// Copies row r of x into dst as T with the model's input rules applied, then
// NaN (the slot every leaf reads, so leaves loop to themselves), then the
// negated features (read by nodes whose NaN default is their "then" child).
template <typename T, typename Src>
inline void LoadRowFrom(const Src* base, const MatrixView& x, int64_t r, T* dst,
                        const InputRules& rules) {
  const Src* p = base + r * x.row_stride;
  if (x.col_stride == 1) {
    for (int64_t c = 0; c < x.cols; ++c) dst[c] = static_cast<T>(p[c]);
  } else {
    for (int64_t c = 0; c < x.cols; ++c) dst[c] = static_cast<T>(p[c * x.col_stride]);
  }
  if (rules.flush_tiny) {
    for (int64_t c = 0; c < x.cols; ++c) {
      if (std::fabs(static_cast<double>(p[c * x.col_stride])) <= kLightGBMZero) dst[c] = T(0);
    }
  }
  if (rules.feature_rule != nullptr) {
    for (int64_t c = 0; c < x.cols; ++c) {
      const uint8_t rule = rules.feature_rule[c];
      if (rule == kRuleNaNAsZero) {
        if (dst[c] != dst[c]) dst[c] = T(0);
      } else if (rule == kRuleKnownCategory) {
        const double v = p[c * x.col_stride];
        const uint32_t* bits = rules.known_categories + c * 8;
        const bool known = v >= 0.0 && v < 256.0 && v == std::floor(v) &&
                           ((bits[static_cast<uint32_t>(v) / 32] >> (static_cast<uint32_t>(v) % 32)) & 1u);
        if (!known) dst[c] = std::numeric_limits<T>::quiet_NaN();
      }
    }
  }
  dst[x.cols] = std::numeric_limits<T>::quiet_NaN();
  for (int64_t c = 0; c < x.cols; ++c) dst[x.cols + 1 + c] = -dst[c];
}

template <typename T>
inline void LoadRow(const MatrixView& x, int64_t r, T* dst, const InputRules& rules) {
  if (x.dtype == DType::kFloat32) {
    LoadRowFrom(static_cast<const float*>(x.data), x, r, dst, rules);
  } else {
    LoadRowFrom(static_cast<const double*>(x.data), x, r, dst, rules);
  }
}

template <typename Src>
bool FindRejectedIn(const Src* base, const MatrixView& x, uint8_t reject, int64_t* row,
                    int64_t* col) {
  constexpr double kFloatMax = static_cast<double>(std::numeric_limits<float>::max());
  for (int64_t r = 0; r < x.rows; ++r) {
    const Src* p = base + r * x.row_stride;
    for (int64_t c = 0; c < x.cols; ++c) {
      const double v = p[c * x.col_stride];
      const bool bad = (v != v) ? (reject & kRejectNaN) != 0
                                : (reject & kRejectNonFinite) != 0 && std::fabs(v) > kFloatMax;
      if (bad) {
        *row = r;
        *col = c;
        return true;
      }
    }
  }
  return false;
}

inline double Sigmoid(double alpha, double v) { return 1.0 / (1.0 + std::exp(-alpha * v)); }

// Thread-local scratch: grows to the largest block a thread has seen, never shrinks.
struct Scratch {
  std::vector<float> xt;       // 16 rows, slot-major (vector kernels)
  std::vector<double> xtd;     // 8 rows, slot-major (float64 vector kernel)
  std::vector<double> acc_t;   // their sums, slot-major
  std::vector<float>& Transposed(float*) { return xt; }
  std::vector<double>& Transposed(double*) { return xtd; }
  std::vector<float> xf;
  std::vector<double> xd;
  std::vector<double> acc;
  std::vector<float>& Rows(float*) { return xf; }
  std::vector<double>& Rows(double*) { return xd; }
};
thread_local Scratch tl_scratch;

}  // namespace

void Forest::Finish(double* acc, double* out, bool raw) const noexcept {
  if (raw && raw_sums_) {
    for (int32_t s = 0; s < num_slots_; ++s) acc[s] += base_[s];
  } else {
    for (int32_t s = 0; s < num_slots_; ++s) acc[s] = acc[s] * slot_scale_[s] + base_[s];
  }
  if (raw) {
    std::memcpy(out, acc, sizeof(double) * static_cast<size_t>(num_slots_));
    return;
  }
  for (int32_t t = 0; t < num_target_; ++t) {
    double* v = acc + static_cast<ptrdiff_t>(t) * max_class_;
    const int32_t n = num_class_[t];
    switch (post_) {
      case Postprocessor::kIdentity:
      case Postprocessor::kIdentityMulticlass:
        break;
      case Postprocessor::kSigmoid:
        for (int32_t k = 0; k < n; ++k) v[k] = Sigmoid(sigmoid_alpha_, v[k]);
        break;
      case Postprocessor::kMulticlassOva:
        for (int32_t k = 0; k < n; ++k) v[k] = Sigmoid(sigmoid_alpha_, v[k]);
        break;
      case Postprocessor::kSoftmax: {
        double m = v[0];
        for (int32_t k = 1; k < n; ++k) m = std::max(m, v[k]);
        double sum = 0.0;
        for (int32_t k = 0; k < n; ++k) sum += (v[k] = std::exp(v[k] - m));
        for (int32_t k = 0; k < n; ++k) v[k] /= sum;
        break;
      }
      case Postprocessor::kExponential:
        for (int32_t k = 0; k < n; ++k) v[k] = std::exp(v[k]);
        break;
      case Postprocessor::kExponentialStandardRatio:
        for (int32_t k = 0; k < n; ++k) v[k] = std::exp2(-v[k] / ratio_c_);
        break;
      case Postprocessor::kLogarithmOnePlusExp:
        for (int32_t k = 0; k < n; ++k) v[k] = std::log1p(std::exp(v[k]));
        break;
      case Postprocessor::kSignedSquare:
        for (int32_t k = 0; k < n; ++k) v[k] = std::copysign(v[k] * v[k], v[k]);
        break;
      case Postprocessor::kHinge:
        for (int32_t k = 0; k < n; ++k) v[k] = v[k] > 0.0 ? 1.0 : 0.0;
        break;
    }
  }
  switch (output_kind_) {
    case OutputKind::kPlain:
      std::memcpy(out, acc, sizeof(double) * static_cast<size_t>(num_slots_));
      break;
    case OutputKind::kBinaryProba:
      out[0] = 1.0 - acc[0];
      out[1] = acc[0];
      break;
    case OutputKind::kNegate:
      for (int32_t s = 0; s < num_slots_; ++s) out[s] = -acc[s];
      break;
    case OutputKind::kArgmax: {
      int32_t best = 0;
      for (int32_t s = 1; s < num_slots_; ++s) {
        if (acc[s] > acc[best]) best = s;
      }
      out[0] = static_cast<double>(best);
      break;
    }
  }
}

template <typename T>
void Forest::WalkVector(const T* xs, int64_t stride, int64_t nrows, double* acc) const noexcept {
  constexpr int64_t kW = 64 / sizeof(T);  // rows per vector: 16 floats or 8 doubles
  Scratch& s = tl_scratch;
  std::vector<T>& xt_buf = s.Transposed(static_cast<T*>(nullptr));
  const size_t need_xt = static_cast<size_t>(kW * stride);
  const size_t need_acc = static_cast<size_t>(kW * num_slots_);
  if (xt_buf.size() < need_xt) xt_buf.resize(need_xt);
  if (s.acc_t.size() < need_acc) s.acc_t.resize(need_acc);
  T* xt = xt_buf.data();
  double* acc_t = s.acc_t.data();
  for (int64_t g = 0; g < nrows; g += kW) {
    const int64_t m = std::min<int64_t>(kW, nrows - g);
    // Transpose kW rows to slot-major; a short group repeats its last row.
    for (int64_t lane = 0; lane < kW; ++lane) {
      const T* row = xs + (g + std::min(lane, m - 1)) * stride;
      for (int64_t slot = 0; slot < stride; ++slot) xt[slot * kW + lane] = row[slot];
    }
    std::fill(acc_t, acc_t + need_acc, 0.0);
    for (const Chunk& c : chunks_) {
      if constexpr (std::is_same_v<T, double>) {
        internal::WalkChunk8D(nodes_d_.data(), xt, trees_.data(), c, leaf_values_.data(), acc_t);
      } else if (!level_trees_.empty()) {
        internal::WalkLevels16(level_thr_.data(), level_feat_.data(), level_leaf_.data(),
                               level_trees_.data(), xt, trees_.data(), c, acc_t);
      } else {
        internal::WalkChunk16(nodes_f_.data(), xt, trees_.data(), c, leaf_values_.data(), acc_t,
                              top_levels_.empty() ? nullptr : top_levels_.data());
      }
    }
    for (int64_t lane = 0; lane < m; ++lane) {
      for (int32_t slot = 0; slot < num_slots_; ++slot) {
        acc[(g + lane) * num_slots_ + slot] = acc_t[slot * kW + lane];
      }
    }
  }
}

void Forest::Prepare() {
  bool scalar_leaves = true;
  for (const TreeInfo& t : trees_) scalar_leaves = scalar_leaves && t.leaf_len == 1;
  vector_ready_ = scalar_leaves && cat_bits_.empty() && nodes_f_.size() < (uint64_t{1} << 31) / 4;
  BuildLevels();
}

// The scalar walk: tree chunk by tree chunk, so a chunk's nodes stay in L1
// while the block's rows pass over it.
template <bool kCat, typename T, typename Node>
void Forest::WalkRows(const Node* nodes, const T* xs, int64_t stride, int64_t nrows,
                      double* acc) const noexcept {
  for (const Chunk& c : chunks_) {
    for (int64_t r = 0; r < nrows; ++r) {
      WalkChunk<kCat, T, Node>(nodes, cat_bits_.data(), xs + r * stride, trees_.data(), c,
                               leaf_values_.data(), acc + r * num_slots_);
    }
  }
}

template <typename T, typename Node>
void Forest::PredictBlock(const std::vector<Node>& nodes, const MatrixView& x, int64_t row0,
                          int64_t nrows, double* out, bool raw) const noexcept {
  Scratch& s = tl_scratch;
  std::vector<T>& rows = s.Rows(static_cast<T*>(nullptr));
  const int64_t stride = 2 * x.cols + 1;
  // Sizes only grow; after a thread's first block this never allocates. A failed
  // allocation here would terminate (noexcept): it is bounded by kBlockRows rows.
  const size_t need_x = static_cast<size_t>(kBlockRows * stride);
  const size_t need_acc = static_cast<size_t>(kBlockRows * num_slots_);
  if (rows.size() < need_x) rows.resize(need_x);
  if (s.acc.size() < need_acc) s.acc.resize(need_acc);
  T* xs = rows.data();
  double* acc = s.acc.data();
  const InputRules rules{flush_tiny_, feature_rule_.empty() ? nullptr : feature_rule_.data(),
                         known_categories_.empty() ? nullptr : known_categories_.data()};
  for (int64_t r = 0; r < nrows; ++r) LoadRow<T>(x, row0 + r, xs + r * stride, rules);
  std::fill(acc, acc + nrows * num_slots_, 0.0);
  if (vector_ready_ && nrows >= kVectorMinRows && internal::VectorKernelAvailable()) {
    WalkVector<T>(xs, stride, nrows, acc);
  } else if (cat_bits_.empty()) {
    WalkRows<false, T, Node>(nodes.data(), xs, stride, nrows, acc);
  } else {
    WalkRows<true, T, Node>(nodes.data(), xs, stride, nrows, acc);
  }
  const int32_t cols = num_columns(raw);
  for (int64_t r = 0; r < nrows; ++r) Finish(acc + r * num_slots_, out + (row0 + r) * cols, raw);
}

template <typename T, typename Node>
void Forest::PredictRange(const std::vector<Node>& nodes, const MatrixView& x, int64_t begin,
                          int64_t end, double* out, bool raw) const noexcept {
  for (int64_t r = begin; r < end; r += kBlockRows) {
    PredictBlock<T, Node>(nodes, x, r, std::min(kBlockRows, end - r), out, raw);
  }
}

bool Forest::FindRejected(const MatrixView& x, int64_t* row, int64_t* col) const noexcept {
  if (reject_ == 0 || x.rows <= 0) return false;
  if (x.dtype == DType::kFloat32) {
    return FindRejectedIn(static_cast<const float*>(x.data), x, reject_, row, col);
  }
  return FindRejectedIn(static_cast<const double*>(x.data), x, reject_, row, col);
}

Status Forest::Predict(const MatrixView& x, double* out, bool raw, int n_threads) const noexcept {
  if (x.cols != num_feature_ || x.rows < 0) return Status::kBadShape;
  if (x.dtype != DType::kFloat32 && x.dtype != DType::kFloat64) return Status::kBadDType;
  if (x.rows == 0) return Status::kOk;
  const bool use_double = precision_ == Precision::kFloat64 && x.dtype == DType::kFloat64;
  auto run = [&](int64_t b, int64_t e) {
    if (use_double) {
      PredictRange<double>(nodes_d_, x, b, e, out, raw);
    } else {
      PredictRange<float>(nodes_f_, x, b, e, out, raw);
    }
  };
  int64_t threads = std::min<int64_t>(std::max(n_threads, 1), x.rows / kMinRowsPerThread);
  if (threads <= 1) {
    run(0, x.rows);
    return Status::kOk;
  }
  // Split on block boundaries so no two threads share an output row.
  const int64_t blocks = (x.rows + kBlockRows - 1) / kBlockRows;
  const int64_t per = (blocks + threads - 1) / threads;
  std::vector<std::thread> pool;
  try {
    pool.reserve(static_cast<size_t>(threads - 1));
  } catch (...) {
    run(0, x.rows);
    return Status::kOk;
  }
  for (int64_t t = 1; t < threads; ++t) {
    const int64_t b = std::min(x.rows, t * per * kBlockRows);
    const int64_t e = std::min(x.rows, (t + 1) * per * kBlockRows);
    if (b >= e) continue;
    try {
      pool.emplace_back(run, b, e);
    } catch (...) {
      run(b, e);  // could not start a thread: do its share here
    }
  }
  run(0, std::min(x.rows, per * kBlockRows));
  for (auto& th : pool) th.join();
  return Status::kOk;
}

}  // namespace rtml

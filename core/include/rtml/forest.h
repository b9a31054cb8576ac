// rtml::Forest: a compiled, immutable tree ensemble and its evaluator.
//
// A Forest is built once from a ForestSpec (the trees as treelite describes them)
// and then scores rows. The build lays every tree out depth-first in one flat node
// array so that the "then" child of a node is the next node and only the other
// child's index is stored; leaves loop to themselves, so a tree of depth d is
// walked with exactly d branch-free steps. Trees are grouped by depth into chunks
// of kLanes that are walked in lock-step (independent dependency chains keep the
// core's load ports busy). Batches are evaluated in blocks of rows, tree chunk by
// tree chunk, so a chunk's nodes stay in L1 while a block of rows passes over it.
//
// Exactness: every comparison is rewritten at build time into "x <= T" on the
// input's precision with a threshold T chosen so that the result equals the
// native library's comparison for every representable x (float64 thresholds
// applied to float32 inputs included). Models whose native library compares in
// float64 keep a second node array with float64 thresholds for float64 inputs.
//
// Thread-safety: a built Forest is immutable; Predict may be called from any
// number of threads at once. Progress: Predict is wait-free apart from the
// threads it starts for large batches (n_threads > 1), which it joins.
// Cost: about d node visits per tree per row; no allocation on the single-row
// path after a thread's first call (thread-local scratch is reused).
// Limits: at most 2^27 features and 2^32 nodes; treelite's "==" operator is
// rejected with UnsupportedModelError.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "rtml/error.h"

namespace rtml {

enum class DType : uint8_t { kFloat32 = 0, kFloat64 = 1 };

// Read-only 2-D view of caller memory: element (r, c) is at
// data + r * row_stride + c * col_stride, strides counted in elements.
struct MatrixView {
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;
  int64_t col_stride = 1;
  DType dtype = DType::kFloat32;
};

// Output transforms, named as treelite names them.
enum class Postprocessor : uint8_t {
  kIdentity = 0,
  kSigmoid = 1,
  kSoftmax = 2,
  kExponential = 3,
  kExponentialStandardRatio = 4,
  kLogarithmOnePlusExp = 5,
  kIdentityMulticlass = 6,
  kMulticlassOva = 7,
  kSignedSquare = 8,
  kHinge = 9,
};

// Returns the Postprocessor for treelite's name; throws UnsupportedModelError.
Postprocessor PostprocessorFromName(const std::string& name);
const char* PostprocessorName(Postprocessor p);

// Precision the native library compares in: XGBoost and scikit-learn's classic
// trees cast inputs to float32; LightGBM and HistGradientBoosting compare in
// float64.
enum class Precision : uint8_t { kFloat32 = 0, kFloat64 = 1 };

// Per-feature input rules, applied as a row is read.
enum FeatureRule : uint8_t {
  kRuleNone = 0,
  kRuleNaNAsZero = 1,     // LightGBM, missing_type None: NaN reads as 0.0
  kRuleKnownCategory = 2, // HistGradientBoosting: a value that is not a category
                          // seen in training reads as NaN (missing)
};
enum RejectFlags : uint8_t {
  kRejectNaN = 1,        // scikit-learn GradientBoosting: NaN is an error
  kRejectNonFinite = 2,  // scikit-learn: +-inf or beyond float32 range is an error
};

// How the transformed per-row values become the returned columns, so that rtml
// returns what the native scoring call returns.
enum class OutputKind : uint8_t {
  kPlain = 0,        // the K values as they are
  kBinaryProba = 1,  // one probability p -> columns [1 - p, p]
  kNegate = 2,       // -value (IsolationForest.score_samples)
  kArgmax = 3,       // index of the largest value (XGBoost multi:softmax)
};

// treelite's comparison operators (treelite::Operator numbering).
enum class CompareOp : int8_t { kNone = 0, kEQ = 1, kLT = 2, kLE = 3, kGT = 4, kGE = 5 };

// One tree as treelite describes it; arrays are indexed by treelite node id.
struct TreeSpec {
  std::vector<int8_t> node_type;  // 0 leaf, 1 numerical test, 2 categorical test
  std::vector<int32_t> left;
  std::vector<int32_t> right;
  std::vector<int32_t> feature;
  std::vector<double> threshold;
  std::vector<int8_t> cmp;
  std::vector<uint8_t> default_left;
  std::vector<uint8_t> category_list_right_child;
  std::vector<double> leaf_value;             // scalar leaves
  std::vector<double> leaf_vector;            // vector leaves, concatenated
  std::vector<int64_t> leaf_vector_begin;     // per node, into leaf_vector
  std::vector<int64_t> leaf_vector_end;
  std::vector<uint32_t> category_list;        // concatenated
  std::vector<int64_t> category_list_begin;   // per node, into category_list
  std::vector<int64_t> category_list_end;
  int32_t target_id = 0;                      // -1: the leaf vector spans targets
  int32_t class_id = 0;                       // -1: the leaf vector spans classes
};

struct ForestSpec {
  int32_t num_feature = 0;
  int32_t num_target = 1;
  std::vector<int32_t> num_class{1};  // per target
  std::vector<int32_t> leaf_vector_shape{1, 1};
  bool average_tree_output = false;
  Postprocessor postprocessor = Postprocessor::kIdentity;
  double sigmoid_alpha = 1.0;
  double ratio_c = 1.0;
  std::vector<double> base_scores;  // num_target * max(num_class), row-major
  Precision precision = Precision::kFloat32;
  OutputKind output_kind = OutputKind::kPlain;
  // LightGBM reads every input with |x| <= 1e-35f as 0.0 before its trees see it.
  bool flush_tiny_to_zero = false;
  // Raw scores sum the trees even when predictions average them (LightGBM rf).
  bool raw_sums_trees = false;
  // LightGBM casts a categorical value to int before its sign check, so values in
  // (-1, 0) are category 0 (treelite instead treats every negative as no match).
  bool truncate_categories = false;
  // Per feature (empty = all kNone): how the native library reads the value.
  std::vector<uint8_t> feature_rule;
  // kKnownCategory features: 8 words (categories 0..255) per feature, all features.
  std::vector<uint32_t> known_categories;
  // Inputs the native library refuses (kRejectNaN | kRejectNonFinite).
  uint8_t reject = 0;
  std::string metadata;             // opaque to the core (the Python layer's JSON)
  std::vector<TreeSpec> trees;
};

namespace detail {
// 12 bytes. feat_flags: bits 0..27 the slot read in the row buffer, which holds
// [x_0 .. x_{F-1}, NaN, -x_0 .. -x_{F-1}]: slot F is the leaf slot (a leaf
// compares NaN and loops to itself), slots above F are negated features, used
// by nodes whose NaN default is the "then" child (see build.cc). Categorical
// nodes only: bit 29 value truncated before its sign check (LightGBM), bit 30
// NaN goes to "then", bit 31 categorical test. A model without categorical
// nodes has no flag bits set, so its kernel indexes with feat_flags directly.
// A leaf's threshold bits hold its offset into the leaf value array.
struct NodeF {
  float threshold;
  uint32_t other;  // index of the "else" child; a leaf's own index
  uint32_t feat_flags;
};
struct NodeD {
  double threshold;
  uint32_t other;
  uint32_t feat_flags;
};
struct TreeInfo {
  uint32_t root;
  uint32_t slot_base;    // first output slot this tree adds to
  uint32_t slot_stride;  // distance between the slots of a leaf vector
  uint32_t leaf_len;     // values per leaf
};
struct Chunk {
  uint32_t begin;  // into the evaluation-ordered tree list
  uint32_t end;
  uint32_t depth;  // steps that bring every tree of the chunk to a leaf
};
// A tree re-laid as a complete binary tree of its chunk's depth, level by
// level (node j of level k at node_off + 2^k - 1 + j; its "then" child is 2j,
// its "else" child 2j + 1), for the vector kernel: with no child pointers a
// level's thresholds and features come from register permutes, not gathers.
// Leaves above the last level continue as pass-through nodes (NaN threshold:
// always "else") down to their slot among the 2^depth leaf values.
struct LevelTree {
  uint32_t node_off;
  uint32_t leaf_off;
};
constexpr uint32_t kMaxLevelDepth = 8;
// The first kTopLevels levels of a deep tree as 16-entry tables, breadth-first
// (node j's children are 2j + 1 and 2j + 2; a leaf above the last level passes
// rows on with a NaN threshold), and, for the 16 positions below them, the
// depth-first node index the walk continues from.
constexpr uint32_t kTopLevels = 4;
struct TopLevels {
  float threshold[16];
  uint32_t feature[16];
  uint32_t next[16];
};
constexpr uint32_t kFeatureMask = (1u << 28) - 1;

// The low 32 bits of a node's threshold field: a leaf's value offset or a
// categorical node's bitset offset (the build stores them there; little-endian).
template <typename Node>
inline uint32_t PayloadOf(const Node& n) {
  uint32_t v;
  std::memcpy(&v, &n.threshold, sizeof(v));
  return v;
}
constexpr uint32_t kTruncateCategory = 1u << 29;
constexpr uint32_t kDefaultFirst = 1u << 30;
constexpr uint32_t kCategorical = 1u << 31;
constexpr int kLanes = 8;
}  // namespace detail

class Forest {
 public:
  // Compiles a spec; throws UnsupportedModelError / InputError naming the tree
  // and node that cannot be compiled exactly.
  static Forest Build(const ForestSpec& spec);

  // rtml's compiled file: versioned header, checksummed payload. Throws
  // ModelFormatError for truncated, corrupted, unknown or future-version data.
  static Forest FromBytes(const uint8_t* data, size_t size);
  static Forest Load(const std::string& path);
  std::string ToBytes() const;
  void Save(const std::string& path) const;  // temp file + rename

  int32_t num_features() const { return num_feature_; }
  int32_t num_trees() const { return static_cast<int32_t>(trees_.size()); }
  // Values per row before the output kind: num_target * max num_class.
  int32_t num_slots() const { return num_slots_; }
  // Columns the scoring call returns per row (raw or transformed).
  int32_t num_columns(bool raw) const;
  int32_t num_target() const { return num_target_; }
  const std::vector<int32_t>& num_class() const { return num_class_; }
  Postprocessor postprocessor() const { return post_; }
  Precision precision() const { return precision_; }
  OutputKind output_kind() const { return output_kind_; }
  bool average_tree_output() const { return average_; }
  bool flush_tiny_to_zero() const { return flush_tiny_; }
  size_t num_nodes() const { return nodes_f_.size(); }
  int32_t max_depth() const;
  const std::string& metadata() const { return metadata_; }

  // Inputs the native library refuses: returns true and the first offending
  // (row, col) when x holds one. Wait-free; O(rows * cols) when rejects() != 0.
  bool FindRejected(const MatrixView& x, int64_t* row, int64_t* col) const noexcept;
  uint8_t rejects() const { return reject_; }

  // Scores x into out (x.rows * num_columns(raw) doubles, row-major). raw skips
  // the postprocessor and the output kind (margins, as the native raw call).
  // Returns kBadShape when x.cols != num_features(). Wait-free hot path; with
  // n_threads > 1 and a large batch, rows are split over that many threads.
  Status Predict(const MatrixView& x, double* out, bool raw, int n_threads) const noexcept;

 private:
  template <typename T, typename Node>
  void PredictBlock(const std::vector<Node>& nodes, const MatrixView& x, int64_t row0,
                    int64_t nrows, double* out, bool raw) const noexcept;
  template <typename T, typename Node>
  void PredictRange(const std::vector<Node>& nodes, const MatrixView& x, int64_t begin,
                    int64_t end, double* out, bool raw) const noexcept;
  void Finish(double* acc, double* out, bool raw) const noexcept;
  template <bool kCat, typename T, typename Node>
  void WalkRows(const Node* nodes, const T* xs, int64_t stride, int64_t nrows,
                double* acc) const noexcept;
  template <typename T>
  void WalkVector(const T* xs, int64_t stride, int64_t nrows, double* acc) const noexcept;
  void Prepare();      // derives the vector kernels' data after a build or a load
  void BuildLevels();  // fills the level_* members (levels.cc)
  void Validate() const;  // bounds of every index; throws ModelFormatError

  friend class ForestCodec;

  int32_t num_feature_ = 0;
  int32_t num_target_ = 1;
  int32_t max_class_ = 1;
  int32_t num_slots_ = 1;
  std::vector<int32_t> num_class_;
  Postprocessor post_ = Postprocessor::kIdentity;
  double sigmoid_alpha_ = 1.0;
  double ratio_c_ = 1.0;
  Precision precision_ = Precision::kFloat32;
  OutputKind output_kind_ = OutputKind::kPlain;
  bool average_ = false;
  bool flush_tiny_ = false;
  bool raw_sums_ = false;
  std::vector<uint8_t> feature_rule_;       // per feature, or empty
  std::vector<uint32_t> known_categories_;  // 8 words per feature, or empty
  uint8_t reject_ = 0;
  bool vector_ready_ = false;         // the AVX-512 kernel may walk this forest
  // Derived (not stored in the file): level layout of every tree when every
  // chunk is at most kMaxLevelDepth deep, else empty.
  std::vector<float> level_thr_;
  std::vector<uint32_t> level_feat_;
  std::vector<double> level_leaf_;
  std::vector<detail::LevelTree> level_trees_;
  std::vector<detail::TopLevels> top_levels_;  // deep forests on the vector path, or empty
  std::vector<double> base_;        // per slot
  std::vector<double> slot_scale_;  // per slot: 1 / trees adding to it when averaging
  std::vector<detail::NodeF> nodes_f_;
  std::vector<detail::NodeD> nodes_d_;  // only when precision_ == kFloat64
  std::vector<uint32_t> cat_bits_;      // per categorical node: [n_words, words...]
  std::vector<double> leaf_values_;
  std::vector<detail::TreeInfo> trees_;  // evaluation order (grouped by depth)
  std::vector<detail::Chunk> chunks_;
  std::string metadata_;
};

}  // namespace rtml

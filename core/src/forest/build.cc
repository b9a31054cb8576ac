// Compiles a ForestSpec into the flat layout described in rtml/forest.h.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "rtml/forest.h"

namespace rtml {
namespace {

using detail::Chunk;
using detail::NodeD;
using detail::NodeF;
using detail::TreeInfo;

// Largest float <= t (or < t when strict). Exact: (double)x <= t holds for a
// float x exactly when x <= result, so float32 inputs meet float64 thresholds
// the way the native float64 comparison does.
float FloatAtMost(double t, bool strict) {
  if (std::isnan(t)) return std::numeric_limits<float>::quiet_NaN();
  float f = static_cast<float>(t);
  if (static_cast<double>(f) > t) f = std::nextafter(f, -std::numeric_limits<float>::infinity());
  if (strict && static_cast<double>(f) == t) {
    f = std::nextafter(f, -std::numeric_limits<float>::infinity());
  }
  return f;
}

// Stores a payload (leaf value or category bitset offset) in both node twins'
// threshold fields, where detail::PayloadOf reads it: the low 32 bits.
void SetPayload(NodeF* f, NodeD* d, uint32_t off) {
  std::memcpy(&f->threshold, &off, sizeof(off));
  const uint64_t off64 = off;
  std::memcpy(&d->threshold, &off64, sizeof(off64));
}

// The T' with (-x <= T') == (x > t) for every non-NaN x of t's type.
template <typename T>
T NegatedBelow(T t) {
  if (t == std::numeric_limits<T>::infinity()) return std::numeric_limits<T>::quiet_NaN();  // never
  return std::nextafter(-t, -std::numeric_limits<T>::infinity());
}

double DoubleAtMost(double t, bool strict) {
  return strict ? std::nextafter(t, -std::numeric_limits<double>::infinity()) : t;
}

[[noreturn]] void Unsupported(size_t tree, int32_t node, const std::string& what) {
  throw UnsupportedModelError("tree " + std::to_string(tree) + ", node " + std::to_string(node) +
                              ": " + what);
}

[[noreturn]] void BadSpec(size_t tree, int32_t node, const std::string& what) {
  throw InputError("tree " + std::to_string(tree) + ", node " + std::to_string(node) + ": " +
                   what);
}

struct Compiler {
  const ForestSpec& spec;
  std::vector<NodeF>& nodes_f;
  std::vector<NodeD>& nodes_d;
  std::vector<uint32_t>& cat_bits;
  std::vector<double>& leaf_values;
  bool want_double;

  void EmitLeaf(size_t t, const TreeSpec& tree, int32_t n, uint32_t leaf_len) {
    const uint32_t pos = static_cast<uint32_t>(nodes_f.size());
    const uint32_t off = static_cast<uint32_t>(leaf_values.size());
    const auto un = static_cast<size_t>(n);
    const bool has_vector = un < tree.leaf_vector_begin.size() && un < tree.leaf_vector_end.size() &&
                            tree.leaf_vector_end[un] > tree.leaf_vector_begin[un];
    if (!has_vector) {
      if (leaf_len != 1) BadSpec(t, n, "scalar leaf in a tree whose leaves are vectors");
      leaf_values.push_back(tree.leaf_value.at(un));
    } else {
      const int64_t b = tree.leaf_vector_begin[un];
      const int64_t e = tree.leaf_vector_end[un];
      if (e - b != static_cast<int64_t>(leaf_len) || b < 0 ||
          e > static_cast<int64_t>(tree.leaf_vector.size())) {
        BadSpec(t, n, "leaf vector has " + std::to_string(e - b) + " values, expected " +
                          std::to_string(leaf_len));
      }
      leaf_values.insert(leaf_values.end(), tree.leaf_vector.begin() + b,
                         tree.leaf_vector.begin() + e);
    }
    const uint32_t leaf_slot = static_cast<uint32_t>(spec.num_feature);
    NodeF f{};
    NodeD d{};
    SetPayload(&f, &d, off);
    f.other = d.other = pos;
    f.feat_flags = d.feat_flags = leaf_slot;
    nodes_f.push_back(f);
    if (want_double) {
      nodes_d.push_back(d);
    }
  }

  // Emits a test node; returns which source child is laid out next ("then").
  std::pair<int32_t, int32_t> EmitTest(size_t t, const TreeSpec& tree, int32_t n) {
    const auto un = static_cast<size_t>(n);
    const int32_t feat = tree.feature.at(un);
    if (feat < 0 || feat >= spec.num_feature) {
      BadSpec(t, n, "split feature " + std::to_string(feat) + " outside [0, " +
                        std::to_string(spec.num_feature) + ")");
    }
    const int32_t left = tree.left.at(un);
    const int32_t right = tree.right.at(un);
    const bool default_left = tree.default_left.at(un) != 0;
    NodeF f{};
    NodeD d{};
    int32_t first = left;
    int32_t second = right;
    uint32_t flags = static_cast<uint32_t>(feat);
    if (tree.node_type[un] == 2) {
      // Categorical: "then" is the child taken by a value in the category list.
      if (tree.category_list_right_child.at(un)) std::swap(first, second);
      const int64_t b = tree.category_list_begin.at(un);
      const int64_t e = tree.category_list_end.at(un);
      if (b < 0 || e < b || e > static_cast<int64_t>(tree.category_list.size())) {
        BadSpec(t, n, "category list out of range");
      }
      uint32_t max_cat = 0;
      for (int64_t i = b; i < e; ++i) max_cat = std::max(max_cat, tree.category_list[i]);
      if (max_cat >= (1u << 24)) {
        Unsupported(t, n, "category " + std::to_string(max_cat) + " >= 2^24 cannot be a float");
      }
      const uint32_t words = (e > b) ? max_cat / 32 + 1 : 0;
      const uint32_t off = static_cast<uint32_t>(cat_bits.size());
      cat_bits.push_back(words);
      cat_bits.resize(cat_bits.size() + words, 0u);
      for (int64_t i = b; i < e; ++i) {
        const uint32_t c = tree.category_list[i];
        cat_bits[off + 1 + c / 32] |= 1u << (c % 32);
      }
      SetPayload(&f, &d, off);
      flags |= detail::kCategorical;
      if (spec.truncate_categories) flags |= detail::kTruncateCategory;
    } else {
      const auto op = static_cast<CompareOp>(tree.cmp.at(un));
      const double thr = tree.threshold.at(un);
      if (std::isnan(thr)) BadSpec(t, n, "threshold is NaN");
      bool strict = false;
      switch (op) {
        case CompareOp::kLE: break;  // x <= t: then = left
        case CompareOp::kLT: strict = true; break;
        case CompareOp::kGT: std::swap(first, second); break;  // x <= t: then = right
        case CompareOp::kGE: strict = true; std::swap(first, second); break;
        default:
          Unsupported(t, n, "comparison operator " + std::to_string(static_cast<int>(op)) +
                                " (only <, <=, >, >= are supported)");
      }
      f.threshold = FloatAtMost(thr, strict);
      d.threshold = DoubleAtMost(thr, strict);
      if (default_left == (first == left)) {
        // NaN must take "then". Ask the mirrored question instead, on the negated
        // copy of the feature: -x <= T' holds exactly when x > T, and NaN fails
        // it, so NaN now takes "else", which is the default child. The hot step
        // is then a single comparison with no NaN test at all.
        std::swap(first, second);
        f.threshold = NegatedBelow(f.threshold);
        d.threshold = NegatedBelow(d.threshold);
        flags = static_cast<uint32_t>(spec.num_feature + 1 + feat);
      }
    }
    if (tree.node_type[un] == 2 && default_left == (first == left)) flags |= detail::kDefaultFirst;
    f.feat_flags = flags;
    d.feat_flags = flags;
    nodes_f.push_back(f);
    if (want_double) nodes_d.push_back(d);
    return {first, second};
  }

  // Lays one tree out depth-first; returns (root index, depth in steps).
  std::pair<uint32_t, uint32_t> CompileTree(size_t t, const TreeSpec& tree, uint32_t leaf_len) {
    const size_t n_nodes = tree.node_type.size();
    if (n_nodes == 0) BadSpec(t, 0, "tree has no nodes");
    if (tree.left.size() != n_nodes || tree.right.size() != n_nodes ||
        tree.feature.size() != n_nodes || tree.threshold.size() != n_nodes ||
        tree.cmp.size() != n_nodes || tree.default_left.size() != n_nodes) {
      BadSpec(t, 0, "node arrays differ in length");
    }
    const uint32_t root = static_cast<uint32_t>(nodes_f.size());
    // (source node, index of the emitted parent whose "else" it is, depth)
    struct Item {
      int32_t node;
      int64_t patch;
      uint32_t depth;
    };
    std::vector<Item> stack{{0, -1, 0}};
    std::vector<uint8_t> seen(n_nodes, 0);
    uint32_t depth = 0;
    while (!stack.empty()) {
      const Item it = stack.back();
      stack.pop_back();
      if (it.node < 0 || static_cast<size_t>(it.node) >= n_nodes) {
        BadSpec(t, it.node, "child index out of range");
      }
      if (seen[it.node]) BadSpec(t, it.node, "node reached twice (not a tree)");
      seen[it.node] = 1;
      const uint32_t pos = static_cast<uint32_t>(nodes_f.size());
      if (it.patch >= 0) {
        nodes_f[it.patch].other = pos;
        if (want_double) nodes_d[it.patch].other = pos;
      }
      const int8_t type = tree.node_type[it.node];
      if (type == 0) {
        EmitLeaf(t, tree, it.node, leaf_len);
        depth = std::max(depth, it.depth);
      } else if (type == 1 || type == 2) {
        const auto [first, second] = EmitTest(t, tree, it.node);
        stack.push_back({second, static_cast<int64_t>(pos), it.depth + 1});
        stack.push_back({first, -1, it.depth + 1});
      } else {
        BadSpec(t, it.node, "unknown node type " + std::to_string(type));
      }
    }
    if (nodes_f.size() >= (uint64_t{1} << 32)) throw UnsupportedModelError("more than 2^32 nodes");
    return {root, depth};
  }
};

}  // namespace

Postprocessor PostprocessorFromName(const std::string& name) {
  static const std::pair<const char*, Postprocessor> kNames[] = {
      {"identity", Postprocessor::kIdentity},
      {"sigmoid", Postprocessor::kSigmoid},
      {"softmax", Postprocessor::kSoftmax},
      {"exponential", Postprocessor::kExponential},
      {"exponential_standard_ratio", Postprocessor::kExponentialStandardRatio},
      {"logarithm_one_plus_exp", Postprocessor::kLogarithmOnePlusExp},
      {"identity_multiclass", Postprocessor::kIdentityMulticlass},
      {"multiclass_ova", Postprocessor::kMulticlassOva},
      {"signed_square", Postprocessor::kSignedSquare},
      {"hinge", Postprocessor::kHinge},
  };
  for (const auto& [n, p] : kNames) {
    if (name == n) return p;
  }
  throw UnsupportedModelError("postprocessor '" + name + "' is not supported");
}

const char* PostprocessorName(Postprocessor p) {
  switch (p) {
    case Postprocessor::kIdentity: return "identity";
    case Postprocessor::kSigmoid: return "sigmoid";
    case Postprocessor::kSoftmax: return "softmax";
    case Postprocessor::kExponential: return "exponential";
    case Postprocessor::kExponentialStandardRatio: return "exponential_standard_ratio";
    case Postprocessor::kLogarithmOnePlusExp: return "logarithm_one_plus_exp";
    case Postprocessor::kIdentityMulticlass: return "identity_multiclass";
    case Postprocessor::kMulticlassOva: return "multiclass_ova";
    case Postprocessor::kSignedSquare: return "signed_square";
    case Postprocessor::kHinge: return "hinge";
  }
  return "unknown";
}

Forest Forest::Build(const ForestSpec& spec) {
  if (spec.num_feature <= 0 || static_cast<uint32_t>(spec.num_feature) >= detail::kFeatureMask / 2) {
    throw InputError("num_feature must be in [1, 2^27), got " + std::to_string(spec.num_feature));
  }
  if (spec.num_target < 1 || spec.num_class.size() != static_cast<size_t>(spec.num_target)) {
    throw InputError("num_class must list one class count per target");
  }
  if (spec.trees.empty()) throw InputError("the model has no trees");
  Forest f;
  f.num_feature_ = spec.num_feature;
  f.num_target_ = spec.num_target;
  f.num_class_ = spec.num_class;
  f.max_class_ = *std::max_element(spec.num_class.begin(), spec.num_class.end());
  if (f.max_class_ < 1) throw InputError("num_class must be >= 1");
  f.num_slots_ = f.num_target_ * f.max_class_;
  f.post_ = spec.postprocessor;
  f.sigmoid_alpha_ = spec.sigmoid_alpha;
  f.ratio_c_ = spec.ratio_c;
  f.precision_ = spec.precision;
  f.output_kind_ = spec.output_kind;
  f.average_ = spec.average_tree_output;
  f.flush_tiny_ = spec.flush_tiny_to_zero;
  f.raw_sums_ = spec.raw_sums_trees;
  if (!spec.feature_rule.empty()) {
    if (spec.feature_rule.size() != static_cast<size_t>(spec.num_feature)) {
      throw InputError("feature_rule must have one rule per feature");
    }
    f.feature_rule_ = spec.feature_rule;
  }
  if (!spec.known_categories.empty() &&
      spec.known_categories.size() != static_cast<size_t>(spec.num_feature) * 8) {
    throw InputError("known_categories must have 8 words per feature");
  }
  f.known_categories_ = spec.known_categories;
  f.reject_ = spec.reject;
  f.metadata_ = spec.metadata;
  if (spec.base_scores.empty()) {
    f.base_.assign(f.num_slots_, 0.0);
  } else if (spec.base_scores.size() == static_cast<size_t>(f.num_slots_)) {
    f.base_ = spec.base_scores;
  } else {
    throw InputError("base_scores has " + std::to_string(spec.base_scores.size()) +
                     " values, expected num_target * max(num_class) = " +
                     std::to_string(f.num_slots_));
  }
  if (f.output_kind_ == OutputKind::kBinaryProba && f.num_slots_ != 1) {
    throw InputError("binary probability output needs exactly one output slot");
  }

  Compiler c{spec, f.nodes_f_, f.nodes_d_, f.cat_bits_, f.leaf_values_,
             spec.precision == Precision::kFloat64};
  struct Built {
    TreeInfo info;
    uint32_t depth;
  };
  std::vector<Built> built;
  built.reserve(spec.trees.size());
  std::vector<uint32_t> contributors(f.num_slots_, 0);
  const int32_t lv_targets = spec.leaf_vector_shape.size() == 2 ? spec.leaf_vector_shape[0] : 1;
  const int32_t lv_classes = spec.leaf_vector_shape.size() == 2 ? spec.leaf_vector_shape[1] : 1;
  for (size_t t = 0; t < spec.trees.size(); ++t) {
    const TreeSpec& tree = spec.trees[t];
    TreeInfo info{};
    const int32_t tid = tree.target_id;
    const int32_t cid = tree.class_id;
    if (tid >= f.num_target_ || cid >= f.max_class_ || tid < -1 || cid < -1) {
      BadSpec(t, 0, "target/class id (" + std::to_string(tid) + ", " + std::to_string(cid) +
                        ") outside the model's outputs");
    }
    if (tid >= 0 && cid >= 0) {
      info.slot_base = static_cast<uint32_t>(tid * f.max_class_ + cid);
      info.slot_stride = 1;
      info.leaf_len = 1;
    } else if (tid >= 0) {  // spans the classes of one target
      info.slot_base = static_cast<uint32_t>(tid * f.max_class_);
      info.slot_stride = 1;
      info.leaf_len = static_cast<uint32_t>(lv_classes);
    } else if (cid >= 0) {  // spans the targets for one class
      info.slot_base = static_cast<uint32_t>(cid);
      info.slot_stride = static_cast<uint32_t>(f.max_class_);
      info.leaf_len = static_cast<uint32_t>(lv_targets);
    } else {  // spans everything
      if (lv_classes != f.max_class_) BadSpec(t, 0, "leaf vectors do not span every class");
      info.slot_base = 0;
      info.slot_stride = 1;
      info.leaf_len = static_cast<uint32_t>(lv_targets * lv_classes);
    }
    if (info.slot_base + (info.leaf_len - 1) * info.slot_stride >=
        static_cast<uint32_t>(f.num_slots_)) {
      BadSpec(t, 0, "leaf vector does not fit the model's outputs");
    }
    for (uint32_t k = 0; k < info.leaf_len; ++k) ++contributors[info.slot_base + k * info.slot_stride];
    const auto [root, depth] = c.CompileTree(t, tree, info.leaf_len);
    info.root = root;
    built.push_back({info, depth});
  }
  f.slot_scale_.assign(f.num_slots_, 1.0);
  if (f.average_) {
    for (int32_t s = 0; s < f.num_slots_; ++s) {
      if (contributors[s] > 0) f.slot_scale_[s] = 1.0 / static_cast<double>(contributors[s]);
    }
  }
  // Group trees of equal depth so a lock-step chunk wastes no steps.
  std::stable_sort(built.begin(), built.end(),
                   [](const Built& a, const Built& b) { return a.depth < b.depth; });
  for (size_t i = 0; i < built.size(); i += detail::kLanes) {
    const size_t end = std::min(built.size(), i + detail::kLanes);
    f.chunks_.push_back({static_cast<uint32_t>(i), static_cast<uint32_t>(end), built[end - 1].depth});
  }
  for (const Built& b : built) f.trees_.push_back(b.info);
  f.Validate();
  f.Prepare();
  return f;
}

int32_t Forest::num_columns(bool raw) const {
  if (raw) return num_slots_;
  switch (output_kind_) {
    case OutputKind::kBinaryProba: return 2;
    case OutputKind::kArgmax: return 1;
    default: return num_slots_;
  }
}

int32_t Forest::max_depth() const {
  uint32_t d = 0;
  for (const auto& c : chunks_) d = std::max(d, c.depth);
  return static_cast<int32_t>(d);
}

}  // namespace rtml

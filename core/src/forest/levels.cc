// Derives the level layout (detail::LevelTree) from the depth-first node array.
#include <limits>
#include <vector>

#include "rtml/forest.h"

namespace rtml {

namespace {

struct LevelFill {
  const std::vector<detail::NodeF>& nodes;
  const std::vector<double>& leaves;
  uint32_t leaf_slot;
  uint32_t depth;
  float* thr;       // this tree's 2^depth - 1 level nodes
  uint32_t* feat;
  double* leaf;     // this tree's 2^depth leaf values

  void Fill(uint32_t i, uint32_t level, uint32_t j) {
    const detail::NodeF& n = nodes[i];
    const bool is_leaf = n.feat_flags == leaf_slot;
    if (level == depth) {
      leaf[j] = leaves[detail::PayloadOf(n)];
      return;
    }
    const uint32_t at = (1u << level) - 1 + j;
    if (is_leaf) {  // pass-through: NaN fails "<=", so every row goes "else"
      thr[at] = std::numeric_limits<float>::quiet_NaN();
      feat[at] = 0;
      Fill(i, level + 1, 2 * j + 1);
      return;
    }
    thr[at] = n.threshold;
    feat[at] = n.feat_flags;
    Fill(i + 1, level + 1, 2 * j);
    Fill(n.other, level + 1, 2 * j + 1);
  }
};

// Fills the top-level tables of the tree whose depth-first node is i.
void FillTop(const std::vector<detail::NodeF>& nodes, uint32_t leaf_slot, uint32_t i, uint32_t at,
             detail::TopLevels* top) {
  if (at >= 15) {  // below the tables: where the depth-first walk continues
    top->next[at - 15] = i;
    return;
  }
  const detail::NodeF& n = nodes[i];
  if (n.feat_flags == leaf_slot) {  // pass rows on ("else") and stay on the leaf
    top->threshold[at] = std::numeric_limits<float>::quiet_NaN();
    top->feature[at] = 0;
    FillTop(nodes, leaf_slot, i, 2 * at + 2, top);
    return;
  }
  top->threshold[at] = n.threshold;
  top->feature[at] = n.feat_flags;
  FillTop(nodes, leaf_slot, i + 1, 2 * at + 1, top);
  FillTop(nodes, leaf_slot, n.other, 2 * at + 2, top);
}

}  // namespace

void Forest::BuildLevels() {
  level_thr_.clear();
  level_feat_.clear();
  level_leaf_.clear();
  level_trees_.clear();
  top_levels_.clear();
  if (!vector_ready_) return;
  for (const detail::Chunk& c : chunks_) {
    if (c.depth > detail::kMaxLevelDepth) {
      // Too deep for the level layout: tables for the first levels only.
      top_levels_.resize(trees_.size());
      for (size_t t = 0; t < trees_.size(); ++t) {
        top_levels_[t] = detail::TopLevels{};
        FillTop(nodes_f_, static_cast<uint32_t>(num_feature_), trees_[t].root, 0, &top_levels_[t]);
      }
      return;
    }
  }
  size_t n_nodes = 0;
  size_t n_leaves = 0;
  for (const detail::Chunk& c : chunks_) {
    n_nodes += (c.end - c.begin) * ((size_t{1} << c.depth) - 1);
    n_leaves += (c.end - c.begin) * (size_t{1} << c.depth);
  }
  // Padding: the kernel loads 16 entries from a level's start even when the
  // level has fewer nodes.
  level_thr_.assign(n_nodes + 32, 0.0f);
  level_feat_.assign(n_nodes + 32, 0u);
  level_leaf_.assign(n_leaves, 0.0);
  level_trees_.resize(trees_.size());
  size_t node_off = 0;
  size_t leaf_off = 0;
  for (const detail::Chunk& c : chunks_) {
    for (uint32_t t = c.begin; t < c.end; ++t) {
      LevelFill fill{nodes_f_, leaf_values_, static_cast<uint32_t>(num_feature_), c.depth,
                     level_thr_.data() + node_off, level_feat_.data() + node_off,
                     level_leaf_.data() + leaf_off};
      fill.Fill(trees_[t].root, 0, 0);
      level_trees_[t] = {static_cast<uint32_t>(node_off), static_cast<uint32_t>(leaf_off)};
      node_off += (size_t{1} << c.depth) - 1;
      leaf_off += size_t{1} << c.depth;
    }
  }
}

}  // namespace rtml

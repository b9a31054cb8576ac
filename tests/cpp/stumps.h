// A test forest of one stump per feature: tree f splits on x_f < 0.5 (NaN goes
// left) into leaves leaf(f) = {left, right}; the output is base + the sum.
#pragma once

#include <memory>
#include <utility>

#include "rtml/forest.h"

namespace rtml_test {

template <typename Leaves>
std::shared_ptr<const rtml::Forest> Stumps(int32_t nf, double base, Leaves leaf) {
  rtml::ForestSpec s;
  s.num_feature = nf;
  s.base_scores = {base};
  for (int32_t f = 0; f < nf; ++f) {
    const std::pair<double, double> lr = leaf(f);
    rtml::TreeSpec t;
    t.node_type = {1, 0, 0};
    t.left = {1, -1, -1};
    t.right = {2, -1, -1};
    t.feature = {f, -1, -1};
    t.threshold = {0.5, 0, 0};
    t.cmp = {static_cast<int8_t>(rtml::CompareOp::kLT), 0, 0};
    t.default_left = {1, 0, 0};
    t.category_list_right_child = {0, 0, 0};
    t.leaf_value = {0, lr.first, lr.second};
    t.leaf_vector_begin = {0, 0, 0};
    t.leaf_vector_end = {0, 0, 0};
    t.category_list_begin = {0, 0, 0};
    t.category_list_end = {0, 0, 0};
    s.trees.push_back(std::move(t));
  }
  return std::make_shared<const rtml::Forest>(rtml::Forest::Build(s));
}

}  // namespace rtml_test

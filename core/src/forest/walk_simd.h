// Vector tree walks (internal to core/src/forest).
//
// WalkChunk16 walks one chunk of trees for 16 rows at once. xt holds the 16
// rows transposed, slot-major: xt[slot * 16 + lane], with the slot layout of
// the scalar row buffer (features, the NaN leaf slot, negated features). It
// adds each tree's leaf value to acc_t[slot_base * 16 + lane]. Preconditions:
// float32 nodes, no categorical nodes, scalar leaves, fewer than 2^31 / 3
// nodes. Wait-free, allocation-free.
#pragma once

#include "rtml/forest.h"

namespace rtml {
namespace internal {

// True when this CPU runs the vector kernel and it is not forced off.
bool VectorKernelAvailable();

// Test hook: force the scalar kernel on (true) or let the CPU decide (false).
void ForceScalarKernel(bool on);

// The same on the level layout (detail::LevelTree) of trees at most
// kMaxLevelDepth deep: levels of up to 32 nodes are read with register
// permutes, deeper ones with gathers.
void WalkLevels16(const float* thr, const uint32_t* feat, const double* leaf,
                  const detail::LevelTree* level_trees, const float* xt,
                  const detail::TreeInfo* trees, const detail::Chunk& c, double* acc_t) noexcept;

// Float64 twin for 8 rows (xt[slot * 8 + lane]), on NodeD.
void WalkChunk8D(const detail::NodeD* nodes, const double* xt, const detail::TreeInfo* trees,
                 const detail::Chunk& c, const double* leaves, double* acc_t) noexcept;

// tops (or nullptr): per tree in evaluation order, its first kTopLevels levels
// as register tables (detail::TopLevels).
void WalkChunk16(const detail::NodeF* nodes, const float* xt, const detail::TreeInfo* trees,
                 const detail::Chunk& c, const double* leaves, double* acc_t,
                 const detail::TopLevels* tops) noexcept;

}  // namespace internal
}  // namespace rtml

// The AVX-512 walk: 16 rows per vector, up to 8 trees in lock-step, one
// gather per node field. Compiled for AVX-512F with a target attribute and
// chosen at run time, so the default build still runs on any x86-64.
#include "walk_simd.h"

#include <atomic>
#include <cstdlib>

#if defined(__x86_64__) && defined(__GNUC__)
// GCC 12's AVX-512 headers start gathers from _mm512_undefined_*(), which its
// own -Wuninitialized flags inside the header.
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)  // a GCC-only warning; clang would warn about the pragma
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#define RTML_HAVE_AVX512_KERNEL 1
#endif

namespace rtml {
namespace internal {

namespace {
// 0 = decide from the CPU, 1 = forced off (tests compare both kernels).
std::atomic<int> g_force_scalar{0};

bool CpuHasAvx512() {
#ifdef RTML_HAVE_AVX512_KERNEL
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                          std::getenv("RTML_SCALAR") == nullptr;
  return has;
#else
  return false;
#endif
}
}  // namespace

void ForceScalarKernel(bool on) { g_force_scalar.store(on ? 1 : 0, std::memory_order_relaxed); }

bool VectorKernelAvailable() {
  return g_force_scalar.load(std::memory_order_relaxed) == 0 && CpuHasAvx512();
}

#ifdef RTML_HAVE_AVX512_KERNEL

namespace {

template <int kN>
__attribute__((target("avx512f"))) inline void Walk(const detail::NodeF* nodes, const float* xt,
                                                    const detail::TreeInfo* trees, uint32_t depth,
                                                    const double* leaves, double* acc_t,
                                                    const detail::TopLevels* tops) {
  const float* thr_base = reinterpret_cast<const float*>(nodes);
  const int* int_base = reinterpret_cast<const int*>(nodes);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i two = _mm512_set1_epi32(2);
  __m512i idx[kN];
  uint32_t d = 0;
  if (tops != nullptr && depth >= detail::kTopLevels) {
    // The first levels, where every row passes, from register tables (one
    // gather per level, for x) instead of four gathers per level.
    for (int k = 0; k < kN; ++k) {
      const __m512 thr_tab = _mm512_loadu_ps(tops[k].threshold);
      const __m512i feat_tab = _mm512_loadu_si512(tops[k].feature);
      __m512i j = _mm512_setzero_si512();  // node index within the top levels
      for (uint32_t level = 0; level < detail::kTopLevels; ++level) {
        const __m512 t = _mm512_permutexvar_ps(j, thr_tab);
        const __m512i f = _mm512_permutexvar_epi32(j, feat_tab);
        const __m512 x = _mm512_i32gather_ps(_mm512_add_epi32(_mm512_slli_epi32(f, 4), lane), xt, 4);
        const __mmask16 then = _mm512_cmp_ps_mask(x, t, _CMP_LE_OQ);
        // Children of top node j are 2j + 1 ("then") and 2j + 2 ("else").
        const __m512i next = _mm512_add_epi32(_mm512_slli_epi32(j, 1), two);
        j = _mm512_mask_sub_epi32(next, then, next, one);
      }
      // j is now 15..30: the depth-first node each lane continues from.
      idx[k] = _mm512_permutexvar_epi32(_mm512_sub_epi32(j, _mm512_set1_epi32(15)),
                                        _mm512_loadu_si512(tops[k].next));
    }
    d = detail::kTopLevels;
  } else {
    for (int k = 0; k < kN; ++k) idx[k] = _mm512_set1_epi32(static_cast<int>(trees[k].root));
  }
  for (; d < depth; ++d) {
    __mmask16 moved = 0;
    for (int k = 0; k < kN; ++k) {
      // NodeF is three 4-byte words: threshold, other, feature.
      const __m512i i3 = _mm512_add_epi32(_mm512_slli_epi32(idx[k], 1), idx[k]);
      const __m512 thr = _mm512_i32gather_ps(i3, thr_base, 4);
      const __m512i other = _mm512_i32gather_epi32(_mm512_add_epi32(i3, one), int_base, 4);
      const __m512i feat = _mm512_i32gather_epi32(_mm512_add_epi32(i3, two), int_base, 4);
      const __m512 x = _mm512_i32gather_ps(_mm512_add_epi32(_mm512_slli_epi32(feat, 4), lane), xt, 4);
      // Ordered <=: NaN is false and takes "else" (the default child), as in
      // the scalar step.
      const __mmask16 then = _mm512_cmp_ps_mask(x, thr, _CMP_LE_OQ);
      const __m512i next = _mm512_mask_blend_epi32(then, other, _mm512_add_epi32(idx[k], one));
      moved |= _mm512_cmpneq_epi32_mask(next, idx[k]);
      idx[k] = next;
    }
    // Leaves loop to themselves: once no lane moves, every lane is at a leaf
    // (unbalanced trees, as LightGBM grows them, stop well before the chunk depth).
    if (moved == 0) break;
  }
  for (int k = 0; k < kN; ++k) {
    const __m512i i3 = _mm512_add_epi32(_mm512_slli_epi32(idx[k], 1), idx[k]);
    const __m512i off = _mm512_i32gather_epi32(i3, int_base, 4);  // a leaf's value offset
    const __m512d lo = _mm512_i32gather_pd(_mm512_castsi512_si256(off), leaves, 8);
    const __m512d hi = _mm512_i32gather_pd(_mm512_extracti64x4_epi64(off, 1), leaves, 8);
    double* a = acc_t + static_cast<size_t>(trees[k].slot_base) * 16;
    _mm512_storeu_pd(a, _mm512_add_pd(_mm512_loadu_pd(a), lo));
    _mm512_storeu_pd(a + 8, _mm512_add_pd(_mm512_loadu_pd(a + 8), hi));
  }
}

}  // namespace

__attribute__((target("avx512f"))) void WalkChunk16(const detail::NodeF* nodes, const float* xt,
                                                    const detail::TreeInfo* trees,
                                                    const detail::Chunk& c, const double* leaves,
                                                    double* acc_t,
                                                    const detail::TopLevels* tops) noexcept {
  const detail::TreeInfo* first = trees + c.begin;
  const detail::TopLevels* top = tops == nullptr ? nullptr : tops + c.begin;
  if (c.end - c.begin == static_cast<uint32_t>(detail::kLanes)) {
    Walk<detail::kLanes>(nodes, xt, first, c.depth, leaves, acc_t, top);
    return;
  }
  for (uint32_t k = 0; k < c.end - c.begin; ++k) {
    Walk<1>(nodes, xt, first + k, c.depth, leaves, acc_t, top == nullptr ? nullptr : top + k);
  }
}

namespace {

// Thresholds and features of node j (per lane) of a level starting at `base`
// with `width` nodes.
__attribute__((target("avx512f"))) inline void LevelLookup(const float* thr, const int* feat,
                                                           uint32_t width, __m512i j, __m512* t,
                                                           __m512i* f) {
  if (width <= 16) {
    *t = _mm512_permutexvar_ps(j, _mm512_loadu_ps(thr));
    *f = _mm512_permutexvar_epi32(j, _mm512_loadu_si512(feat));
  } else if (width == 32) {
    *t = _mm512_permutex2var_ps(_mm512_loadu_ps(thr), j, _mm512_loadu_ps(thr + 16));
    *f = _mm512_permutex2var_epi32(_mm512_loadu_si512(feat), j, _mm512_loadu_si512(feat + 16));
  } else {
    *t = _mm512_i32gather_ps(j, thr, 4);
    *f = _mm512_i32gather_epi32(j, feat, 4);
  }
}

template <int kN>
__attribute__((target("avx512f"))) inline void WalkLevels(const float* thr, const uint32_t* feat,
                                                          const double* leaf,
                                                          const detail::LevelTree* lt,
                                                          const float* xt,
                                                          const detail::TreeInfo* trees,
                                                          uint32_t depth, double* acc_t) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i one = _mm512_set1_epi32(1);
  const int* ifeat = reinterpret_cast<const int*>(feat);
  __m512i j[kN];
  for (int k = 0; k < kN; ++k) {
    // Level 0: one node for every lane, so its feature is a plain load.
    const uint32_t root = lt[k].node_off;
    const __m512 x = _mm512_loadu_ps(xt + static_cast<size_t>(feat[root]) * 16);
    const __mmask16 then = _mm512_cmp_ps_mask(x, _mm512_set1_ps(thr[root]), _CMP_LE_OQ);
    j[k] = _mm512_mask_sub_epi32(one, then, one, one);  // then -> 0, else -> 1
  }
  for (uint32_t level = 1; level < depth; ++level) {
    const uint32_t width = 1u << level;
    for (int k = 0; k < kN; ++k) {
      const uint32_t base = lt[k].node_off + width - 1;
      __m512 t;
      __m512i f;
      LevelLookup(thr + base, ifeat + base, width, j[k], &t, &f);
      const __m512 x = _mm512_i32gather_ps(_mm512_add_epi32(_mm512_slli_epi32(f, 4), lane), xt, 4);
      const __mmask16 then = _mm512_cmp_ps_mask(x, t, _CMP_LE_OQ);
      const __m512i next = _mm512_add_epi32(_mm512_slli_epi32(j[k], 1), one);  // the "else" child
      j[k] = _mm512_mask_sub_epi32(next, then, next, one);
    }
  }
  for (int k = 0; k < kN; ++k) {
    const double* values = leaf + lt[k].leaf_off;
    const __m512d lo = _mm512_i32gather_pd(_mm512_castsi512_si256(j[k]), values, 8);
    const __m512d hi = _mm512_i32gather_pd(_mm512_extracti64x4_epi64(j[k], 1), values, 8);
    double* a = acc_t + static_cast<size_t>(trees[k].slot_base) * 16;
    _mm512_storeu_pd(a, _mm512_add_pd(_mm512_loadu_pd(a), lo));
    _mm512_storeu_pd(a + 8, _mm512_add_pd(_mm512_loadu_pd(a + 8), hi));
  }
}

}  // namespace

__attribute__((target("avx512f"))) void WalkLevels16(const float* thr, const uint32_t* feat,
                                                     const double* leaf,
                                                     const detail::LevelTree* level_trees,
                                                     const float* xt, const detail::TreeInfo* trees,
                                                     const detail::Chunk& c, double* acc_t) noexcept {
  const detail::LevelTree* lt = level_trees + c.begin;
  const detail::TreeInfo* first = trees + c.begin;
  if (c.depth == 0) {  // single-leaf trees
    for (uint32_t k = 0; k < c.end - c.begin; ++k) {
      double* a = acc_t + static_cast<size_t>(first[k].slot_base) * 16;
      const __m512d v = _mm512_set1_pd(leaf[lt[k].leaf_off]);
      _mm512_storeu_pd(a, _mm512_add_pd(_mm512_loadu_pd(a), v));
      _mm512_storeu_pd(a + 8, _mm512_add_pd(_mm512_loadu_pd(a + 8), v));
    }
    return;
  }
  if (c.end - c.begin == static_cast<uint32_t>(detail::kLanes)) {
    WalkLevels<detail::kLanes>(thr, feat, leaf, lt, xt, first, c.depth, acc_t);
    return;
  }
  for (uint32_t k = 0; k < c.end - c.begin; ++k) {
    WalkLevels<1>(thr, feat, leaf, lt + k, xt, first + k, c.depth, acc_t);
  }
}

namespace {

template <int kN>
__attribute__((target("avx512f,avx512vl"))) inline void WalkD(const detail::NodeD* nodes, const double* xt,
                                                     const detail::TreeInfo* trees, uint32_t depth,
                                                     const double* leaves, double* acc_t) {
  const double* thr_base = reinterpret_cast<const double*>(nodes);
  const int* int_base = reinterpret_cast<const int*>(nodes);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i one = _mm256_set1_epi32(1);
  __m256i idx[kN];
  for (int k = 0; k < kN; ++k) idx[k] = _mm256_set1_epi32(static_cast<int>(trees[k].root));
  for (uint32_t d = 0; d < depth; ++d) {
    __mmask8 moved = 0;
    for (int k = 0; k < kN; ++k) {
      // NodeD is two 8-byte words: threshold, then (other, feature).
      const __m256i i2 = _mm256_slli_epi32(idx[k], 1);
      const __m256i i4 = _mm256_slli_epi32(idx[k], 2);
      const __m512d thr = _mm512_i32gather_pd(i2, thr_base, 8);
      const __m256i other = _mm256_mmask_i32gather_epi32(
          _mm256_setzero_si256(), 0xFF, _mm256_add_epi32(i4, _mm256_set1_epi32(2)), int_base, 4);
      const __m256i feat = _mm256_mmask_i32gather_epi32(
          _mm256_setzero_si256(), 0xFF, _mm256_add_epi32(i4, _mm256_set1_epi32(3)), int_base, 4);
      const __m512d x = _mm512_i32gather_pd(_mm256_add_epi32(_mm256_slli_epi32(feat, 3), lane), xt, 8);
      const __mmask8 then = _mm512_cmp_pd_mask(x, thr, _CMP_LE_OQ);
      const __m256i next = _mm256_mask_blend_epi32(then, other, _mm256_add_epi32(idx[k], one));
      moved |= _mm256_cmpneq_epi32_mask(next, idx[k]);
      idx[k] = next;
    }
    if (moved == 0) break;  // every lane is at a leaf
  }
  for (int k = 0; k < kN; ++k) {
    const __m256i i2 = _mm256_slli_epi32(idx[k], 1);
    // A leaf's value offset: the low word of its threshold field.
    const __m256i off = _mm256_mmask_i32gather_epi32(_mm256_setzero_si256(), 0xFF, _mm256_slli_epi32(i2, 1),
                                                     int_base, 4);
    const __m512d v = _mm512_i32gather_pd(off, leaves, 8);
    double* a = acc_t + static_cast<size_t>(trees[k].slot_base) * 8;
    _mm512_storeu_pd(a, _mm512_add_pd(_mm512_loadu_pd(a), v));
  }
}

}  // namespace

__attribute__((target("avx512f,avx512vl"))) void WalkChunk8D(const detail::NodeD* nodes,
                                                             const double* xt,
                                                             const detail::TreeInfo* trees,
                                                             const detail::Chunk& c,
                                                             const double* leaves,
                                                             double* acc_t) noexcept {
  const detail::TreeInfo* first = trees + c.begin;
  if (c.end - c.begin == static_cast<uint32_t>(detail::kLanes)) {
    WalkD<detail::kLanes>(nodes, xt, first, c.depth, leaves, acc_t);
    return;
  }
  for (uint32_t k = 0; k < c.end - c.begin; ++k) WalkD<1>(nodes, xt, first + k, c.depth, leaves, acc_t);
}

#else

void WalkChunk8D(const detail::NodeD*, const double*, const detail::TreeInfo*, const detail::Chunk&,
                 const double*, double*) noexcept {}

void WalkLevels16(const float*, const uint32_t*, const double*, const detail::LevelTree*,
                  const float*, const detail::TreeInfo*, const detail::Chunk&, double*) noexcept {}

void WalkChunk16(const detail::NodeF*, const float*, const detail::TreeInfo*, const detail::Chunk&,
                 const double*, double*, const detail::TopLevels*) noexcept {}

#endif

}  // namespace internal
}  // namespace rtml

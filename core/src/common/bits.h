// Small bit helpers shared by core/src (internal: not part of the public API).
#pragma once

#include <cstdint>
#include <cstring>

namespace rtml::internal {

// A double's 64 bits and back (records store values as raw words).
inline uint64_t Bits(double v) {
  uint64_t b;
  std::memcpy(&b, &v, sizeof(b));
  return b;
}

inline double FromBits(uint64_t b) {
  double v;
  std::memcpy(&v, &b, sizeof(v));
  return v;
}

// splitmix64's finalizer: spreads every input bit over the output.
inline uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBULL;
  x ^= x >> 31;
  return x;
}

}  // namespace rtml::internal

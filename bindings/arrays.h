// The numpy array types the bindings take: C-contiguous, converted on the way
// in when the caller's dtype or layout differs (forcecast).
#pragma once

#include <pybind11/numpy.h>

#include <cstdint>

namespace rtml_bindings {

template <typename T>
using CArray = pybind11::array_t<T, pybind11::array::c_style | pybind11::array::forcecast>;
using F64 = CArray<double>;
using F32C = CArray<float>;
using I64 = CArray<int64_t>;

}  // namespace rtml_bindings

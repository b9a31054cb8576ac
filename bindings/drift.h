// The core DriftMonitor behind an rtml._core.DriftMonitor, for other bindings
// (the Scorer feeds it from its C++ scoring path).
#pragma once

#include <pybind11/pybind11.h>

#include <memory>

#include "rtml/drift.h"

namespace rtml_bindings {

// The monitor, shared (keep the pointer for as long as you observe into it), or
// nullptr when obj is not an rtml._core.DriftMonitor.
std::shared_ptr<rtml::DriftMonitor> DriftOfPy(const pybind11::handle& obj);

}  // namespace rtml_bindings

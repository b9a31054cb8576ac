// Registration functions of the binding's translation units.
#pragma once

#include <pybind11/pybind11.h>

namespace rtml_bindings {
void BindForest(pybind11::module_& m);
void BindFeatureTable(pybind11::module_& m);
void BindWindowTable(pybind11::module_& m);
}  // namespace rtml_bindings

// rtml._core: the pybind11 bridge to core/. It converts types and releases the
// GIL around core calls; it holds no logic of its own.
#include <pybind11/pybind11.h>

#include "bindings.h"
#include "rtml/error.h"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "rtml's compiled core (private: use the rtml package).";
  // One hierarchy, declared in core/include/rtml/error.h. Translators run in
  // reverse registration order, so the base class is registered first.
  auto& base = py::register_exception<rtml::Error>(m, "RtmlError");
  base.doc() = "Base class of every error rtml raises.";
  py::register_exception<rtml::InputError>(m, "InputError", base.ptr());
  py::register_exception<rtml::ModelFormatError>(m, "ModelFormatError", base.ptr());
  py::register_exception<rtml::UnsupportedModelError>(m, "UnsupportedModelError", base.ptr());
  py::register_exception<rtml::SnapshotError>(m, "SnapshotError", base.ptr());
  rtml_bindings::BindForest(m);
  rtml_bindings::BindFeatureTable(m);
  rtml_bindings::BindWindowTable(m);
  rtml_bindings::BindSnapshot(m);
  rtml_bindings::BindDrift(m);
  rtml_bindings::BindScorer(m);
  rtml_bindings::BindMetrics(m);
  rtml_bindings::BindWire(m);
  rtml_bindings::BindServer(m);
}

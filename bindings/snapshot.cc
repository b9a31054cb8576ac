// Binding of rtml::SnapshotGate: one per FeatureStore; takes point-in-time
// sections of its tables and window sets, and restores them.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "bindings.h"
#include "rtml/error.h"
#include "rtml/snapshot.h"

namespace py = pybind11;

namespace rtml_bindings {

rtml::FeatureTable& CoreTableOf(const py::handle& obj) {
  if (rtml::FeatureTable* t = TableOfPyTable(obj)) return *t;
  if (rtml::FeatureTable* t = TableOfPyWindows(obj)) return *t;
  throw rtml::InputError("expected a core FeatureTable or WindowTable, got " +
                         py::repr(obj).cast<std::string>());
}

void BindSnapshot(py::module_& m) {
  py::class_<rtml::SnapshotGate>(m, "SnapshotGate", "Point-in-time snapshots of a store's tables.")
      .def(py::init<>())
      .def(
          "attach",
          [](rtml::SnapshotGate& gate, const py::handle& table) { CoreTableOf(table).set_gate(&gate); },
          py::arg("table"), py::keep_alive<2, 1>(),
          "Attaches a new table (before it is shared); the table keeps the gate alive.")
      .def(
          "take",
          [](rtml::SnapshotGate& gate, const py::list& tables) {
            std::vector<const rtml::FeatureTable*> core;
            for (const auto& t : tables) core.push_back(&CoreTableOf(t));
            std::vector<std::string> sections;
            {
              py::gil_scoped_release release;
              gate.Take(core, &sections);
            }
            py::list out;
            for (const auto& s : sections) out.append(py::bytes(s));
            return out;
          },
          py::arg("tables"), "One section (bytes) per table, all at one cut.")
      .def_property_readonly("active", &rtml::SnapshotGate::active);
  m.def(
      "restore_section",
      [](const py::handle& table, const py::bytes& section) {
        const std::string_view s = section;
        rtml::RestoreSection(CoreTableOf(table), reinterpret_cast<const uint8_t*>(s.data()), s.size());
      },
      py::arg("table"), py::arg("section"), "Fills an empty table from a section (all checked first).");
}

}  // namespace rtml_bindings

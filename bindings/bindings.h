// Registration functions of the binding's translation units.
#pragma once

#include <pybind11/pybind11.h>

#include "rtml/feature_table.h"
#include "rtml/window.h"
#include "rtml/metrics.h"
#include "rtml/scorer.h"

namespace rtml_bindings {
void BindForest(pybind11::module_& m);
void BindFeatureTable(pybind11::module_& m);
void BindWindowTable(pybind11::module_& m);
void BindSnapshot(pybind11::module_& m);
void BindDrift(pybind11::module_& m);
void BindMetrics(pybind11::module_& m);
// Metrics snapshots as the dicts of the stats schema (documented in rtml/metrics.py).
pybind11::dict LatencySnapshotDict(const rtml::LatencySnapshot& s, const std::vector<int64_t>& bounds_ns);
pybind11::dict ValueSnapshotDict(const rtml::ValueSnapshot& s);
// The core table behind a binding object, or nullptr when obj is another type.
rtml::FeatureTable* TableOfPyTable(const pybind11::handle& obj);
rtml::FeatureTable* TableOfPyWindows(const pybind11::handle& obj);
rtml::WindowTable* WindowsOfPyWindows(const pybind11::handle& obj);
void BindScorer(pybind11::module_& m);
// The core scorer behind a binding object and its metrics observer, or nullptr.
const rtml::Scorer* ScorerOfPyScorer(const pybind11::handle& obj, rtml::ScoreObserver** observer);
void BindWire(pybind11::module_& m);   // bindings/wire.cc
void BindServer(pybind11::module_& m);  // bindings/server.cc
}  // namespace rtml_bindings

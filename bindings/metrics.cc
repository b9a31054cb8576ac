// Binding of rtml/metrics.h: LatencyHistogram and ValueHistogram as Python
// objects, and the snapshot -> dict conversion every stats() dict uses (the
// schema is documented in rtml/metrics.py).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "arrays.h"
#include "bindings.h"
#include "rtml/metrics.h"

namespace py = pybind11;

namespace rtml_bindings {

namespace {

using rtml::LatencyHistogram;
using rtml::ValueHistogram;


constexpr double kInf = std::numeric_limits<double>::infinity();

// Value or None: an empty histogram has no quantiles.
py::object OrNone(bool empty, py::object v) { return empty ? py::object(py::none()) : v; }

}  // namespace

py::dict LatencySnapshotDict(const rtml::LatencySnapshot& s, const std::vector<int64_t>& bounds_ns) {
  const bool empty = s.count == 0;
  py::dict d;
  d["count"] = s.count;
  d["sum"] = s.sum;
  d["min"] = OrNone(empty, py::int_(s.Min()));
  d["max"] = OrNone(empty, py::int_(s.Max()));
  d["mean"] = OrNone(empty, py::float_(s.Mean()));
  d["p50"] = OrNone(empty, py::int_(s.Quantile(0.5)));
  d["p95"] = OrNone(empty, py::int_(s.Quantile(0.95)));
  d["p99"] = OrNone(empty, py::int_(s.Quantile(0.99)));
  d["p999"] = OrNone(empty, py::int_(s.Quantile(0.999)));
  d["overflow"] = s.overflow;
  d["negative"] = s.negative;
  const std::vector<uint64_t> cum = s.CumulativeAt(bounds_ns);
  py::list buckets;
  for (std::size_t i = 0; i < bounds_ns.size(); ++i) {
    buckets.append(py::make_tuple(py::int_(bounds_ns[i]), py::int_(cum[i])));
  }
  buckets.append(py::make_tuple(py::float_(kInf), py::int_(s.count)));
  d["buckets"] = buckets;
  return d;
}

py::dict ValueSnapshotDict(const rtml::ValueSnapshot& s) {
  const bool empty = s.count == 0;
  py::dict d;
  d["count"] = s.count;
  d["sum"] = s.sum;
  d["mean"] = OrNone(empty, py::float_(s.sum / static_cast<double>(s.count)));
  d["p50"] = OrNone(empty, py::float_(s.Quantile(0.5)));
  d["p95"] = OrNone(empty, py::float_(s.Quantile(0.95)));
  d["p99"] = OrNone(empty, py::float_(s.Quantile(0.99)));
  d["p999"] = OrNone(empty, py::float_(s.Quantile(0.999)));
  d["nan"] = s.nan;
  d["underflow"] = s.underflow;
  d["overflow"] = s.overflow;
  d["edges"] = s.edges;
  d["counts"] = s.counts;
  const std::vector<uint64_t> cum = s.Cumulative();
  py::list buckets;
  for (std::size_t i = 0; i < cum.size(); ++i) {
    buckets.append(py::make_tuple(py::float_(s.edges[i + 1]), py::int_(cum[i])));
  }
  buckets.append(py::make_tuple(py::float_(kInf), py::int_(s.count)));
  d["buckets"] = buckets;
  return d;
}

void BindMetrics(py::module_& m) {
  py::class_<LatencyHistogram>(m, "LatencyHistogram",
                               "Lock-free log-linear histogram of nanosecond values (see rtml.metrics).")
      .def(py::init<>())
      .def(
          "record", [](LatencyHistogram& h, int64_t ns) { h.Record(ns); }, py::arg("ns"))
      .def(
          "record_many",
          [](LatencyHistogram& h, const I64& ns) {
            const int64_t* p = ns.data();
            const auto n = static_cast<std::size_t>(ns.size());
            py::gil_scoped_release release;
            h.RecordMany(p, n);
          },
          py::arg("ns"))
      .def(
          "snapshot",
          [](const LatencyHistogram& h, const std::optional<std::vector<int64_t>>& bounds) {
            rtml::LatencySnapshot s;
            {
              py::gil_scoped_release release;
              h.SnapshotInto(&s);
            }
            return LatencySnapshotDict(s, bounds ? *bounds : LatencyHistogram::DefaultBoundsNs());
          },
          py::arg("bounds_ns") = py::none())
      .def("reset", &LatencyHistogram::Reset)
      .def_property_readonly_static("max_value",
                                    [](const py::object&) { return LatencyHistogram::kMaxValue; })
      .def_property_readonly_static(
          "default_bounds_ns", [](const py::object&) { return LatencyHistogram::DefaultBoundsNs(); });

  py::class_<ValueHistogram>(m, "ValueHistogram",
                             "Lock-free histogram of doubles in fixed bins (see rtml.metrics).")
      .def(py::init<std::vector<double>>(), py::arg("edges"))
      .def_static("uniform", &ValueHistogram::Uniform, py::arg("lo"), py::arg("hi"), py::arg("bins"))
      .def(
          "record", [](ValueHistogram& h, double x) { h.Record(x); }, py::arg("x"))
      .def(
          "record_many",
          [](ValueHistogram& h, const F64& xs) {
            const double* p = xs.data();
            const auto n = static_cast<std::size_t>(xs.size());
            py::gil_scoped_release release;
            h.RecordMany(p, n);
          },
          py::arg("x"))
      .def("snapshot", [](const ValueHistogram& h) { return ValueSnapshotDict(h.Snapshot()); })
      .def("reset", &ValueHistogram::Reset)
      .def_property_readonly("edges", &ValueHistogram::edges);
}

}  // namespace rtml_bindings

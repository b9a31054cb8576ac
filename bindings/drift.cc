// Binding of rtml::DriftMonitor: reference bins in from numpy, rows observed
// zero-copy with the GIL released, PSI and live counts out as a dict.
#include "drift.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "arrays.h"
#include "bindings.h"
#include "rtml/error.h"

namespace py = pybind11;

namespace rtml_bindings {
namespace {

using rtml::InputError;

using F32Any = py::array_t<float, py::array::forcecast>;

std::vector<double> ToVector(const F64& a, const std::string& what) {
  if (a.ndim() != 1) throw InputError(what + ": expected a 1-D array, got " + std::to_string(a.ndim()) + "-D");
  return {a.data(), a.data() + a.size()};
}

py::array_t<uint64_t> ToArray(const std::vector<uint64_t>& v) {
  py::array_t<uint64_t> out(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

class PyDrift {
 public:
  PyDrift(const std::vector<F64>& feature_edges, const std::vector<F64>& feature_reference,
          const std::optional<F64>& score_edges, const std::optional<F64>& score_reference, uint32_t sample_every,
          uint32_t stripes) {
    if (feature_edges.size() != feature_reference.size()) {
      throw InputError("drift monitor: " + std::to_string(feature_edges.size()) + " edge arrays but " +
                       std::to_string(feature_reference.size()) + " reference arrays");
    }
    if (score_edges.has_value() != score_reference.has_value()) {
      throw InputError("drift monitor: score_edges and score_reference must be given together");
    }
    rtml::DriftSpec s;
    for (size_t f = 0; f < feature_edges.size(); ++f) {
      const std::string what = "feature " + std::to_string(f);
      s.features.push_back({ToVector(feature_edges[f], what + " edges"),
                            ToVector(feature_reference[f], what + " reference")});
    }
    if (score_edges) s.score = {ToVector(*score_edges, "score edges"), ToVector(*score_reference, "score reference")};
    s.sample_every = sample_every;
    s.stripes = stripes;
    m_ = std::make_shared<rtml::DriftMonitor>(s);
  }

  const std::shared_ptr<rtml::DriftMonitor>& core() const { return m_; }

  // rows: (n, num_features) float32; any row stride is read in place, other
  // layouts and dtypes are copied to C-contiguous float32 first.
  void ObserveMany(const py::handle& rows_obj, const std::optional<F64>& scores) {
    F32Any rows = F32Any::ensure(rows_obj);
    if (!rows) throw InputError("observe_many: rows must be a 2-D array of numbers");
    const size_t nf = m_->num_features();
    if (rows.ndim() != 2 || static_cast<size_t>(rows.shape(1)) != nf) {
      std::string shape = "(";
      for (py::ssize_t d = 0; d < rows.ndim(); ++d) shape += (d ? ", " : "") + std::to_string(rows.shape(d));
      throw InputError("observe_many: rows must have shape (n, " + std::to_string(nf) + "), got " + shape + ")");
    }
    if (rows.shape(0) > 1 && (rows.strides(1) != sizeof(float) || rows.strides(0) < 0 ||
                              rows.strides(0) % static_cast<py::ssize_t>(sizeof(float)) != 0)) {
      rows = F32C::ensure(rows);
    } else if (rows.shape(0) <= 1 && nf > 1 && rows.strides(1) != sizeof(float)) {
      rows = F32C::ensure(rows);
    }
    const size_t n = static_cast<size_t>(rows.shape(0));
    const size_t stride = n > 1 ? static_cast<size_t>(rows.strides(0)) / sizeof(float) : nf;
    const double* sc = nullptr;
    if (scores) {
      if (scores->ndim() != 1 || static_cast<size_t>(scores->size()) != n) {
        throw InputError("observe_many: " + std::to_string(n) + " rows but scores of shape (" +
                         std::to_string(scores->size()) + ",); expected one score per row");
      }
      sc = scores->data();
    }
    const float* data = rows.data();
    rtml::Status st;
    {
      py::gil_scoped_release release;
      st = m_->ObserveMany(data, n, stride, sc);
    }
    if (st != rtml::Status::kOk) throw InputError("observe_many: rows rejected (bad shape)");
  }

  // One row; keeps the GIL (a sub-microsecond call).
  void Observe(const F32C& row, double score) {
    if (row.ndim() != 1 || static_cast<size_t>(row.size()) != m_->num_features()) {
      throw InputError("observe: expected a row of " + std::to_string(m_->num_features()) + " values, got " +
                       std::to_string(row.size()));
    }
    (void)m_->Observe(row.data(), m_->num_features(), score);
  }

  py::dict Psi() const {
    rtml::DriftReport r;
    {
      py::gil_scoped_release release;
      r = m_->Psi();
    }
    py::list counts;
    for (const auto& c : r.feature_counts) counts.append(ToArray(c));
    py::dict d;
    d["feature_psi"] = r.feature_psi;
    d["score_psi"] = r.score_psi;
    d["feature_counts"] = counts;
    d["score_counts"] = m_->monitors_score() ? py::object(ToArray(r.score_counts)) : py::none();
    d["rows_seen"] = r.rows_seen;
    d["rows_observed"] = r.rows_observed;
    return d;
  }

  py::array_t<float> FeatureEdges(size_t f) const {
    const std::vector<float> e = m_->FeatureEdges(f);
    py::array_t<float> out(static_cast<py::ssize_t>(e.size()));
    std::copy(e.begin(), e.end(), out.mutable_data());
    return out;
  }

 private:
  std::shared_ptr<rtml::DriftMonitor> m_;
};

}  // namespace

std::shared_ptr<rtml::DriftMonitor> DriftOfPy(const py::handle& obj) {
  if (!py::isinstance<PyDrift>(obj)) return nullptr;
  return obj.cast<const PyDrift&>().core();
}

void BindDrift(py::module_& m) {
  py::class_<PyDrift>(m, "DriftMonitor", "Core drift monitor (see rtml.drift).")
      .def(py::init<const std::vector<F64>&, const std::vector<F64>&, const std::optional<F64>&,
                    const std::optional<F64>&, uint32_t, uint32_t>(),
           py::arg("feature_edges"), py::arg("feature_reference"), py::arg("score_edges"),
           py::arg("score_reference"), py::arg("sample_every") = 1, py::arg("stripes") = 0)
      .def("observe_many", &PyDrift::ObserveMany, py::arg("rows"), py::arg("scores"))
      .def("observe", &PyDrift::Observe, py::arg("row"), py::arg("score"))
      .def("psi", &PyDrift::Psi)
      .def("reset", [](PyDrift& d) { d.core()->Reset(); })
      .def("feature_edges", &PyDrift::FeatureEdges, py::arg("feature"))
      .def_property_readonly("num_features", [](const PyDrift& d) { return d.core()->num_features(); })
      .def_property_readonly("monitors_score", [](const PyDrift& d) { return d.core()->monitors_score(); })
      .def_property_readonly("sample_every", [](const PyDrift& d) { return d.core()->sample_every(); })
      .def_property_readonly("stripes", [](const PyDrift& d) { return d.core()->stripes(); });
}

}  // namespace rtml_bindings

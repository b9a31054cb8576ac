// Binding of rtml::Scorer: a request dict (or columns) in, scores out. The
// single-request path reads the dict with the GIL held (a few µs end to end,
// no per-feature Python objects); batches release the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "bindings.h"
#include "drift.h"
#include "keys.h"
#include "rtml/scorer.h"
#include "rtml/scorer_stats.h"

namespace py = pybind11;

namespace rtml_bindings {
namespace {

using rtml::InputError;
using rtml::InputSource;
using rtml::Key;
using rtml::KeyKind;
using rtml::ScorerConfig;

std::shared_ptr<const rtml::Forest> CopyModel(const py::handle& forest) {
  return std::make_shared<const rtml::Forest>(forest.cast<const rtml::Forest&>());
}

// arms: [(name, Forest, version, cumulative weight)], shadow: Forest or None.
ScorerConfig MakeConfig(const py::list& arms, const py::object& shadow, const std::string& shadow_version,
                        uint32_t route_key) {
  ScorerConfig c;
  for (const auto& a : arms) {
    auto t = a.cast<py::tuple>();
    c.arms.push_back({t[0].cast<std::string>(), CopyModel(t[1]), t[2].cast<std::string>(), t[3].cast<double>()});
  }
  if (!shadow.is_none()) {
    c.shadow = CopyModel(shadow);
    c.shadow_version = shadow_version;
  }
  c.route_key = route_key;
  return c;
}

class PyScorer {
 public:
  const rtml::Scorer& core() const { return *scorer_; }
  rtml::ScoreObserver* observer() const { return stats_.get(); }

  // inputs: per model feature (kind, source, column, key) with kind 0 request,
  // 1 table, 2 window; tables / windows: the core objects (kept alive here).
  PyScorer(const py::list& inputs, const std::vector<std::string>& key_names,
           const std::vector<std::string>& key_kinds, const std::vector<std::string>& field_names,
           const py::list& tables, const py::list& windows, const py::list& arms, const py::object& shadow,
           const std::string& shadow_version, uint32_t route_key, const std::vector<std::string>& feature_names,
           const std::vector<int32_t>& age_of, const std::vector<int32_t>& age_from,
           const std::vector<double>& score_edges, int32_t score_column)
      : tables_(tables), windows_(windows), field_names_(field_names) {
    rtml::ScorerPlan plan;
    for (const auto& in : inputs) {
      auto t = in.cast<py::tuple>();
      plan.inputs.push_back({static_cast<InputSource::Kind>(t[0].cast<int>()), t[1].cast<uint32_t>(),
                             t[2].cast<uint32_t>(), t[3].cast<uint32_t>()});
    }
    for (const auto& t : tables) plan.tables.push_back(TableOfPyTable(t));
    for (const auto& w : windows) plan.windows.push_back(WindowsOfPyWindows(w));
    for (const auto* t : plan.tables) {
      if (t == nullptr) throw InputError("scorer: a table source is not a core FeatureTable");
    }
    for (const auto* w : plan.windows) {
      if (w == nullptr) throw InputError("scorer: a window source is not a core WindowTable");
    }
    for (size_t k = 0; k < key_names.size(); ++k) {
      key_names_.emplace_back(key_names[k]);
      plan.keys.push_back(KeyKindFromName(key_kinds[k]));
    }
    for (const auto& f : field_names) field_objs_.emplace_back(f);
    plan.num_fields = static_cast<uint32_t>(field_names.size());
    scorer_ = std::make_unique<rtml::Scorer>(std::move(plan), MakeConfig(arms, shadow, shadow_version, route_key));
    if (score_column < 0 || score_column >= scorer_->num_outputs()) throw InputError("score_column out of range");
    stats_ = std::make_unique<rtml::ScorerStats>(feature_names, age_of, age_from, arms.size(), score_edges,
                                                 score_column);
  }

  py::object Score(const py::dict& request, int64_t now_ns) {
    const RequestView& r = Read(request);
    const int32_t nout = scorer_->num_outputs();
    if (nout == 1) {
      double out = 0;
      Check(scorer_->Score(r.keys.data(), r.fields.data(), now_ns, &out, nullptr, stats_.get()), 0);
      return py::float_(out);
    }
    py::array_t<double> out(nout);
    Check(scorer_->Score(r.keys.data(), r.fields.data(), now_ns, out.mutable_data(), nullptr, stats_.get()), 0);
    return std::move(out);
  }

  // key_columns: one sequence per key name; fields: float64 [n, num fields].
  py::array_t<double> ScoreMany(const py::list& key_columns, const py::array_t<double, py::array::c_style | py::array::forcecast>& fields,
                                int64_t now_ns) {
    const size_t nk = key_names_.size();
    const size_t nf = field_names_.size();
    if (key_columns.size() != nk) throw InputError("score_many: expected " + std::to_string(nk) + " key columns");
    size_t n = fields.ndim() == 2 ? static_cast<size_t>(fields.shape(0)) : 0;
    std::vector<KeyBatch> cols;
    cols.reserve(nk);
    for (size_t k = 0; k < nk; ++k) {
      cols.push_back(ToKeys(key_columns[k], scorer_->plan().keys[k] == KeyKind::kString));
      if (nf == 0 && k == 0) n = cols[0].size();
      if (cols[k].size() != n) {
        throw InputError("score_many: key column '" + std::string(py::str(key_names_[k])) + "' has " +
                         std::to_string(cols[k].size()) + " rows, expected " + std::to_string(n));
      }
    }
    if (nf > 0 && (fields.ndim() != 2 || static_cast<size_t>(fields.shape(1)) != nf)) {
      throw InputError("score_many: request fields must have shape (n, " + std::to_string(nf) + ")");
    }
    std::vector<Key> keys(n * nk);
    for (size_t i = 0; i < n; ++i) {
      for (size_t k = 0; k < nk; ++k) keys[i * nk + k] = cols[k][i];
    }
    const int32_t nout = scorer_->num_outputs();
    py::array_t<double> out = nout == 1 ? py::array_t<double>(static_cast<py::ssize_t>(n))
                                        : py::array_t<double>({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(nout)});
    double* o = out.mutable_data();
    const double* f = nf > 0 ? fields.data() : nullptr;
    rtml::Status st;
    {
      py::gil_scoped_release release;
      st = scorer_->ScoreMany(keys.data(), f, n, now_ns, o, nullptr, stats_.get());
    }
    Check(st, -1);
    return out;
  }

  // (row, age_s, found, arm, shadow) for one request.
  py::tuple Explain(const py::dict& request, int64_t now_ns) {
    const RequestView& r = Read(request);
    const size_t nf = static_cast<size_t>(scorer_->num_features());
    std::vector<double> row(nf), age(nf), out(static_cast<size_t>(scorer_->num_outputs()));
    std::vector<uint8_t> found(nf);
    rtml::ScoreTrace trace{row.data(), age.data(), found.data()};
    Check(scorer_->Score(r.keys.data(), r.fields.data(), now_ns, out.data(), &trace), 0);
    return py::make_tuple(row, age, std::vector<bool>(found.begin(), found.end()), trace.arm, trace.shadow,
                          out);
  }

  void SetConfig(const py::list& arms, const py::object& shadow, const std::string& shadow_version,
                 uint32_t route_key) {
    ScorerConfig c = MakeConfig(arms, shadow, shadow_version, route_key);
    py::gil_scoped_release release;  // waits for readers, some of which may need the GIL
    scorer_->SetConfig(std::move(c));
  }

  py::dict Versions() const {
    const ScorerConfig c = scorer_->config();
    py::dict d;
    py::list arms;
    for (const auto& a : c.arms) arms.append(py::make_tuple(a.name, a.version, a.cumulative));
    d["arms"] = arms;
    d["shadow"] = c.shadow ? py::object(py::str(c.shadow_version)) : py::object(py::none());
    return d;
  }

  int32_t NumOutputs() const { return scorer_->num_outputs(); }

  void SetDrift(const py::object& monitor) {
    if (monitor.is_none()) {
      stats_->SetDrift(nullptr);
      return;
    }
    auto d = DriftOfPy(monitor);
    if (!d) throw InputError("set_drift: expected an rtml._core.DriftMonitor");
    stats_->SetDrift(std::move(d));
  }

  void EnableLog(uint64_t capacity, uint32_t max_key_bytes) {
    if (capacity == 0) {
      stats_->SetLog(nullptr);
      return;
    }
    stats_->SetLog(std::make_shared<rtml::ServingLog>(capacity, static_cast<uint32_t>(scorer_->num_features()),
                                                      scorer_->plan().keys, max_key_bytes));
  }

  // The logged rows, oldest first: (positions, now_ns, arms, scores, keys per
  // key name, features [n, num_features]); None when no log is enabled.
  py::object Log() const {
    auto log = stats_->log();
    if (!log) return py::none();
    std::vector<rtml::LoggedRow> rows;
    {
      py::gil_scoped_release release;
      rows = log->Snapshot();
    }
    const auto n = static_cast<py::ssize_t>(rows.size());
    const auto nf = static_cast<py::ssize_t>(scorer_->num_features());
    py::array_t<uint64_t> pos(n);
    py::array_t<int64_t> now(n);
    py::array_t<int32_t> arm(n);
    py::array_t<double> score(n);
    py::array_t<double> feats({n, nf});
    double* fp = feats.mutable_data();
    for (py::ssize_t i = 0; i < n; ++i) {
      const auto& r = rows[static_cast<size_t>(i)];
      pos.mutable_data()[i] = r.position;
      now.mutable_data()[i] = r.now_ns;
      arm.mutable_data()[i] = r.arm;
      score.mutable_data()[i] = r.score;
      std::copy(r.features.begin(), r.features.end(), fp + i * nf);
    }
    py::list keys;
    for (size_t k = 0; k < key_names_.size(); ++k) {
      if (scorer_->plan().keys[k] == KeyKind::kInt64) {
        py::array_t<int64_t> col(n);
        for (py::ssize_t i = 0; i < n; ++i) col.mutable_data()[i] = rows[static_cast<size_t>(i)].int_keys[k];
        keys.append(col);
      } else {
        py::list col;
        for (const auto& r : rows) col.append(py::str(r.str_keys[k]));
        keys.append(col);
      }
    }
    return py::make_tuple(pos, now, arm, score, keys, feats);
  }

  // The stats dict of rtml/metrics.py's schema (without name, versions, psi
  // and window events, which the Python side adds), with per-arm and shadow
  // dicts under "variants".
  py::dict Stats() const {
    const auto& bounds = rtml::LatencyHistogram::DefaultBoundsNs();
    const rtml::ScorerStats& s = *stats_;
    py::dict d;
    d["requests"] = s.requests.Load();
    d["errors"] = s.errors.Load();
    d["rows"] = s.rows.Load();
    py::dict latency;
    latency["score"] = LatencySnapshotDict(s.score_latency.Snapshot(), bounds);
    latency["score_many"] = LatencySnapshotDict(s.score_many_latency.Snapshot(), bounds);
    d["latency"] = latency;
    py::dict missing, ages;
    const auto counts = s.missing.Snapshot();
    std::vector<py::dict> age_snaps;
    for (const auto& h : s.ages) age_snaps.push_back(LatencySnapshotDict(h->Snapshot(), bounds));
    for (size_t f = 0; f < s.features().size(); ++f) {
      missing[py::str(s.features()[f])] = counts[f];
      if (s.age_of()[f] >= 0) ages[py::str(s.features()[f])] = age_snaps[static_cast<size_t>(s.age_of()[f])];
    }
    d["missing"] = missing;
    d["feature_age"] = ages;
    py::list arms;
    for (size_t a = 0; a < s.arms(); ++a) {
      py::dict arm;
      arm["rows"] = s.arm_rows[a]->Load();
      arm["scores"] = ValueSnapshotDict(s.arm_scores[a]->Snapshot());
      arms.append(arm);
    }
    d["arms"] = arms;
    py::dict shadow;
    shadow["rows"] = s.shadow_rows.Load();
    shadow["scores"] = ValueSnapshotDict(s.shadow_scores->Snapshot());
    shadow["divergence"] = ValueSnapshotDict(s.divergence->Snapshot());
    d["shadow"] = shadow;
    return d;
  }

 private:
  struct RequestView {
    std::vector<Key> keys;
    std::vector<double> fields;
  };

  // Fills request_ (reused: single requests run with the GIL held, one at a
  // time, so a request costs no allocation here). Its str keys view the
  // dict's str objects, valid while the caller holds the dict.
  const RequestView& Read(const py::dict& request) {
    RequestView& r = request_;
    r.keys.resize(key_names_.size());
    r.fields.resize(field_objs_.size());
    for (size_t k = 0; k < key_names_.size(); ++k) {
      PyObject* v = PyDict_GetItemWithError(request.ptr(), key_names_[k].ptr());
      if (v == nullptr) {
        if (PyErr_Occurred()) throw py::error_already_set();
        throw InputError("request lacks the key '" + std::string(py::str(key_names_[k])) + "'");
      }
      if (scorer_->plan().keys[k] == KeyKind::kString) {
        if (!PyUnicode_Check(v)) {
          throw InputError("request key '" + std::string(py::str(key_names_[k])) + "': expected str, got " +
                           py::repr(v).cast<std::string>());
        }
        Py_ssize_t len = 0;
        const char* s = PyUnicode_AsUTF8AndSize(v, &len);  // valid while the dict holds v
        if (s == nullptr) throw py::error_already_set();
        r.keys[k] = Key::Str(std::string_view(s, static_cast<size_t>(len)));
      } else {
        int overflow = 0;
        const bool integral = PyLong_Check(v) && !PyBool_Check(v);
        const long long i = integral ? PyLong_AsLongLongAndOverflow(v, &overflow) : 0;
        if (!integral || overflow != 0) {
          throw InputError("request key '" + std::string(py::str(key_names_[k])) + "': expected an int64, got " +
                           py::repr(v).cast<std::string>());
        }
        r.keys[k] = Key::Int(i);
      }
    }
    for (size_t f = 0; f < field_objs_.size(); ++f) {
      PyObject* v = PyDict_GetItemWithError(request.ptr(), field_objs_[f].ptr());
      if (v == nullptr) {
        if (PyErr_Occurred()) throw py::error_already_set();
        throw InputError("request lacks the field '" + field_names_[f] + "' (pass None for a missing value)");
      }
      if (v == Py_None) {
        r.fields[f] = std::nan("");
        continue;
      }
      const double d = PyFloat_AsDouble(v);
      if (d == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        throw InputError("request field '" + field_names_[f] + "': expected a number, got " +
                         py::repr(v).cast<std::string>());
      }
      r.fields[f] = d;
    }
    return r;
  }

  void Check(rtml::Status st, int64_t row) const {
    if (st == rtml::Status::kOk) return;
    throw InputError(std::string(row < 0 ? "a row" : "the request") +
                     " holds a value the model's native library refuses (e.g. inf for scikit-learn)");
  }

  py::list tables_, windows_;  // keep the sources alive
  std::vector<py::str> key_names_;
  std::vector<py::str> field_objs_;
  std::vector<std::string> field_names_;
  std::unique_ptr<rtml::Scorer> scorer_;
  std::unique_ptr<rtml::ScorerStats> stats_;
  RequestView request_;
};

}  // namespace

const rtml::Scorer* ScorerOfPyScorer(const py::handle& obj, rtml::ScoreObserver** observer) {
  if (!py::isinstance<PyScorer>(obj)) return nullptr;
  const PyScorer& s = obj.cast<const PyScorer&>();
  *observer = s.observer();
  return &s.core();
}

void BindScorer(py::module_& m) {
  py::class_<PyScorer>(m, "Scorer", "Core scorer (see rtml.Scorer).")
      .def(py::init<const py::list&, const std::vector<std::string>&, const std::vector<std::string>&,
                    const std::vector<std::string>&, const py::list&, const py::list&, const py::list&,
                    const py::object&, const std::string&, uint32_t, const std::vector<std::string>&,
                    const std::vector<int32_t>&, const std::vector<int32_t>&, const std::vector<double>&, int32_t>(),
           py::arg("inputs"), py::arg("key_names"), py::arg("key_kinds"), py::arg("field_names"), py::arg("tables"),
           py::arg("windows"), py::arg("arms"), py::arg("shadow"), py::arg("shadow_version"), py::arg("route_key"),
           py::arg("feature_names"), py::arg("age_of"), py::arg("age_from"), py::arg("score_edges"),
           py::arg("score_column"))
      .def("stats", &PyScorer::Stats)
      .def("set_drift", &PyScorer::SetDrift, py::arg("monitor"))
      .def("enable_log", &PyScorer::EnableLog, py::arg("capacity"), py::arg("max_key_bytes"))
      .def("log", &PyScorer::Log)
      .def("score", &PyScorer::Score, py::arg("request"), py::arg("now_ns"))
      .def("score_many", &PyScorer::ScoreMany, py::arg("key_columns"), py::arg("fields"), py::arg("now_ns"))
      .def("explain", &PyScorer::Explain, py::arg("request"), py::arg("now_ns"))
      .def("set_config", &PyScorer::SetConfig, py::arg("arms"), py::arg("shadow"), py::arg("shadow_version"),
           py::arg("route_key"))
      .def("versions", &PyScorer::Versions)
      .def_property_readonly("num_outputs", &PyScorer::NumOutputs);
}

}  // namespace rtml_bindings

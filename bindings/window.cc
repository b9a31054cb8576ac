// Binding of rtml::WindowTable: events in, aggregates out as numpy; batch
// calls copy keys while holding the GIL and run the core without it.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "arrays.h"
#include "bindings.h"
#include "keys.h"
#include "rtml/window.h"

namespace py = pybind11;

namespace rtml_bindings {
namespace {

using rtml::InputError;
using rtml::Key;
using rtml::KeyKind;
using rtml::TableStatus;
using rtml::WindowOp;
using rtml::WindowTable;


WindowOp OpFromName(const std::string& name) {
  static const std::pair<const char*, WindowOp> kOps[] = {
      {"count", WindowOp::kCount}, {"sum", WindowOp::kSum}, {"mean", WindowOp::kMean},
      {"min", WindowOp::kMin},     {"max", WindowOp::kMax}, {"stddev", WindowOp::kStddev},
      {"last", WindowOp::kLast}};
  for (const auto& [n, op] : kOps) {
    if (name == n) return op;
  }
  throw InputError("window op '" + name + "': expected one of count, sum, mean, min, max, stddev, last");
}

class PyWindows {
 public:
  PyWindows(const std::string& kind, const std::vector<std::string>& ops, const std::vector<int64_t>& windows_ns,
            int64_t bucket_ns, uint32_t max_buckets, int64_t history_ns, uint64_t capacity,
            uint32_t max_key_bytes) {
    rtml::WindowSpec s;
    s.key_kind = KeyKindFromName(kind);
    for (const auto& op : ops) s.ops.push_back(OpFromName(op));
    s.windows_ns = windows_ns;
    s.bucket_ns = bucket_ns;
    s.max_buckets = max_buckets;
    s.history_ns = history_ns;
    s.capacity = capacity;
    s.max_key_bytes = max_key_bytes;
    if (capacity < 1) throw InputError("capacity must be >= 1");
    t_ = std::make_unique<WindowTable>(s);
  }

  // Adds events in order; returns how many were dropped as too old. Stops at
  // the first event the table refuses (full, bad key) and raises naming it:
  // events before it are stored, events from it on are not.
  uint64_t Ingest(const py::handle& keys, const F64& values, const I64& event_ns) {
    const KeyBatch b = ToKeys(keys, t_->spec().key_kind == KeyKind::kString);
    const size_t n = b.size();
    if (static_cast<size_t>(values.size()) != n || static_cast<size_t>(event_ns.size()) != n) {
      throw InputError("ingest: " + std::to_string(n) + " keys but " + std::to_string(values.size()) +
                       " values and " + std::to_string(event_ns.size()) + " event times");
    }
    // Refused keys are found before anything is written: all-or-nothing.
    CheckKeyLengths(b, t_->spec().max_key_bytes, "event");
    const double* v = values.data();
    const int64_t* ev = event_ns.data();
    uint64_t dropped = 0;
    size_t failed = n;
    TableStatus why = TableStatus::kOk;
    {
      py::gil_scoped_release release;
      for (size_t i = 0; i < n; ++i) {
        const TableStatus s = t_->Ingest(b[i], v[i], ev[i]);
        if (s == TableStatus::kStale) {
          ++dropped;
        } else if (s != TableStatus::kOk) {
          failed = i;
          why = s;
          break;
        }
      }
    }
    if (failed < n) {
      throw InputError("event " + std::to_string(failed) + " (key " + b.Text(failed) + "): " + StatusText(why) +
                       "; events before it were stored, events from it on were not" +
                       (why == TableStatus::kFull
                            ? " (capacity " + std::to_string(t_->spec().capacity) + " entities)"
                            : ""));
    }
    return dropped;
  }

  // Fills out (n, columns) with the aggregates as of now_ns; found[i] says
  // whether key i has a record (an unknown key reads as empty windows).
  void GetManyInto(const py::handle& keys, int64_t now_ns, py::array_t<double, py::array::c_style> out,
                   py::array_t<bool, py::array::c_style> found) {
    const KeyBatch b = ToKeys(keys, t_->spec().key_kind == KeyKind::kString);
    const size_t n = b.size();
    const uint32_t cols = t_->num_columns();
    if (out.ndim() != 2 || static_cast<size_t>(out.shape(0)) != n || static_cast<uint32_t>(out.shape(1)) != cols) {
      throw InputError("out must be a C-contiguous float64 array of shape (" + std::to_string(n) + ", " +
                       std::to_string(cols) + ")");
    }
    if (static_cast<size_t>(found.size()) != n) throw InputError("found must hold one entry per key");
    double* o = out.mutable_data();
    bool* fd = found.mutable_data();
    size_t bad = n;
    TableStatus why = TableStatus::kOk;
    {
      py::gil_scoped_release release;
      for (size_t i = 0; i < n; ++i) {
        const TableStatus s = t_->Query(b[i], now_ns, o + i * cols);
        fd[i] = s == TableStatus::kOk;
        if (s == TableStatus::kKeyTooLong || s == TableStatus::kBadKeyKind) {
          bad = i;
          why = s;
          break;
        }
      }
    }
    if (bad < n) throw InputError("key " + b.Text(bad) + ": " + StatusText(why));
  }

  std::vector<std::tuple<int64_t, int64_t, uint32_t, uint32_t>> Layout() const {
    std::vector<std::tuple<int64_t, int64_t, uint32_t, uint32_t>> out;
    for (const auto& l : t_->layout()) out.emplace_back(l.window_ns, l.bucket_ns, l.buckets, l.ring_buckets);
    return out;
  }

  py::dict Counters() const {
    const rtml::IngestCounters c = t_->counters();
    py::dict d;
    d["events"] = c.events;
    d["late"] = c.late;
    d["dropped"] = c.dropped;
    return d;
  }

  void SetCounters(uint64_t events, uint64_t late, uint64_t dropped) {
    t_->SetCounters(rtml::IngestCounters{events, late, dropped});
  }

  uint64_t Sweep(int64_t now_ns) {
    py::gil_scoped_release release;
    return t_->Sweep(now_ns);
  }

  uint64_t Size() const { return t_->table().Size(); }
  uint64_t RecordBytes() const { return t_->record_bytes(); }
  uint32_t NumColumns() const { return t_->num_columns(); }
  WindowTable& core() { return *t_; }

 private:
  std::unique_ptr<WindowTable> t_;
};

}  // namespace

rtml::WindowTable* WindowsOfPyWindows(const py::handle& obj) {
  if (!py::isinstance<PyWindows>(obj)) return nullptr;
  return &obj.cast<PyWindows&>().core();
}

rtml::FeatureTable* TableOfPyWindows(const py::handle& obj) {
  if (!py::isinstance<PyWindows>(obj)) return nullptr;
  return &obj.cast<PyWindows&>().core().table();
}

void BindWindowTable(py::module_& m) {
  py::class_<PyWindows>(m, "WindowTable", "Core window aggregates (see rtml.FeatureStore.windows).")
      .def(py::init<const std::string&, const std::vector<std::string>&, const std::vector<int64_t>&, int64_t,
                    uint32_t, int64_t, uint64_t, uint32_t>(),
           py::arg("key_kind"), py::arg("ops"), py::arg("windows_ns"), py::arg("bucket_ns"),
           py::arg("max_buckets"), py::arg("history_ns"), py::arg("capacity"), py::arg("max_key_bytes"))
      .def("ingest", &PyWindows::Ingest, py::arg("keys"), py::arg("values"), py::arg("event_ns"))
      .def("get_many_into", &PyWindows::GetManyInto, py::arg("keys"), py::arg("now_ns"), py::arg("out"),
           py::arg("found"))
      .def("layout", &PyWindows::Layout)
      .def("counters", &PyWindows::Counters)
      .def("set_counters", &PyWindows::SetCounters, py::arg("events"), py::arg("late"), py::arg("dropped"))
      .def("sweep", &PyWindows::Sweep, py::arg("now_ns"))
      .def_property_readonly("record_bytes", &PyWindows::RecordBytes)
      .def_property_readonly("num_columns", &PyWindows::NumColumns)
      .def("__len__", &PyWindows::Size);
}

}  // namespace rtml_bindings

// Binding of rtml::FeatureTable: keys and values in, numpy out; batch calls
// copy keys while holding the GIL and run the table operations without it.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "bindings.h"
#include "keys.h"
#include "rtml/feature_table.h"

namespace py = pybind11;

namespace rtml_bindings {
namespace {

using rtml::FeatureTable;
using rtml::InputError;
using rtml::Key;
using rtml::KeyKind;
using rtml::TableStatus;

class PyTable {
 public:
  PyTable(const std::string& kind, uint32_t num_fields, uint64_t capacity, int64_t ttl_ns,
          uint32_t max_key_bytes) {
    rtml::TableSchema s;
    s.key_kind = KeyKindFromName(kind);
    s.num_fields = num_fields;
    s.capacity = capacity;
    s.ttl_ns = ttl_ns;
    s.max_key_bytes = max_key_bytes;
    table_ = std::make_unique<FeatureTable>(s);
  }

  KeyBatch Keys(const py::handle& keys) const {
    return ToKeys(keys, table_->schema().key_kind == KeyKind::kString);
  }

  // Writes rows of values; returns per-row status codes (0 ok, 2 stale).
  // Stops at the first row the table refuses (full, key too long) and raises
  // naming it: the rows before it are stored, the rows after it are not.
  py::array_t<int8_t> PutMany(const py::handle& keys, const py::array_t<double, py::array::c_style | py::array::forcecast>& values,
                              const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& event_ns) {
    const KeyBatch b = Keys(keys);
    const size_t n = b.size();
    const uint32_t f = table_->schema().num_fields;
    if (values.ndim() != 2 || static_cast<size_t>(values.shape(0)) != n ||
        static_cast<uint32_t>(values.shape(1)) != f) {
      throw InputError("values must have shape (" + std::to_string(n) + ", " + std::to_string(f) + ")");
    }
    if (static_cast<size_t>(event_ns.size()) != n) {
      throw InputError("ts must hold one event time per key");
    }
    // Refused keys are found before anything is written: all-or-nothing.
    CheckKeyLengths(b, table_->schema().max_key_bytes, "row");
    py::array_t<int8_t> status(static_cast<py::ssize_t>(n));
    int8_t* st = status.mutable_data();
    const double* v = values.data();
    const int64_t* ev = event_ns.data();
    size_t failed = n;
    TableStatus why = TableStatus::kOk;
    {
      py::gil_scoped_release release;
      for (size_t i = 0; i < n; ++i) {
        const TableStatus s = table_->Upsert(b[i], v + i * f, ev[i]);
        st[i] = static_cast<int8_t>(s);
        if (s != TableStatus::kOk && s != TableStatus::kStale) {
          failed = i;
          why = s;
          break;
        }
      }
    }
    if (failed < n) {
      throw InputError("row " + std::to_string(failed) + " (key " + b.Text(failed) +
                       "): " + StatusText(why) + "; rows before it were stored, rows from it on were not" +
                       (why == TableStatus::kFull
                            ? " (capacity " + std::to_string(table_->schema().capacity) + ")"
                            : ""));
    }
    return status;
  }

  // Fills out (n, fields) with values (NaN when missing), found and age.
  void GetManyInto(const py::handle& keys, int64_t now_ns, py::array_t<float, py::array::c_style> out,
                   py::array_t<bool, py::array::c_style> found, py::array_t<double, py::array::c_style> age) {
    const KeyBatch b = Keys(keys);
    const size_t n = b.size();
    const uint32_t f = table_->schema().num_fields;
    if (out.ndim() != 2 || static_cast<size_t>(out.shape(0)) != n ||
        static_cast<uint32_t>(out.shape(1)) != f) {
      throw InputError("out must be a C-contiguous float32 array of shape (" + std::to_string(n) +
                       ", " + std::to_string(f) + ")");
    }
    if (static_cast<size_t>(found.size()) != n || static_cast<size_t>(age.size()) != n) {
      throw InputError("found and age must hold one entry per key");
    }
    float* o = out.mutable_data();
    bool* fd = found.mutable_data();
    double* ag = age.mutable_data();
    py::gil_scoped_release release;
    // Chunks whose float64 rows stay in L1 between GetMany and the float32 copy.
    const size_t chunk = std::max<size_t>(4 * FeatureTable::kGetManyAhead, 4096 / f);
    std::vector<double> rows(std::min(n, chunk) * f);
    std::vector<int64_t> ev(std::min(n, chunk));
    std::vector<TableStatus> st(std::min(n, chunk));
    for (size_t begin = 0; begin < n; begin += chunk) {
      const size_t m = std::min(chunk, n - begin);
      table_->GetMany(b.data() + begin, m, now_ns, rows.data(), ev.data(), st.data());
      for (size_t i = 0; i < m; ++i) {
        float* dst = o + (begin + i) * f;
        const bool hit = st[i] == TableStatus::kOk;
        fd[begin + i] = hit;
        if (hit) {  // branch per row, not per value, so the copies vectorize
          const double* src = rows.data() + i * f;
          for (uint32_t j = 0; j < f; ++j) dst[j] = static_cast<float>(src[j]);
          ag[begin + i] = (static_cast<double>(now_ns) - static_cast<double>(ev[i])) * 1e-9;
        } else {
          std::fill(dst, dst + f, std::nanf(""));
          ag[begin + i] = std::nan("");
        }
      }
    }
  }

  // One key: (values as a list of float64, event_ns) or None.
  py::object Get(const py::handle& key, int64_t now_ns) {
    const KeyBatch b = Keys(py::make_tuple(key));
    std::vector<double> row(table_->schema().num_fields);
    int64_t ev = 0;
    const TableStatus s = table_->Get(b[0], now_ns, row.data(), &ev);
    if (s == TableStatus::kKeyTooLong || s == TableStatus::kBadKeyKind) {
      throw InputError("key " + b.Text(0) + ": " + StatusText(s));
    }
    if (s != TableStatus::kOk) return py::none();
    return py::make_tuple(row, ev);
  }

  bool Delete(const py::handle& key) {
    const KeyBatch b = Keys(py::make_tuple(key));
    const TableStatus s = table_->Erase(b[0]);
    if (s == TableStatus::kKeyTooLong || s == TableStatus::kBadKeyKind) {
      throw InputError("key " + b.Text(0) + ": " + StatusText(s));
    }
    return s == TableStatus::kOk;
  }

  uint64_t Sweep(int64_t now_ns) {
    py::gil_scoped_release release;
    return table_->Sweep(now_ns);
  }

  uint64_t Size() const { return table_->Size(); }

  py::list Items(int64_t now_ns) const {
    py::list out;
    const bool str = table_->schema().key_kind == KeyKind::kString;
    const uint32_t f = table_->schema().num_fields;
    table_->ForEach(now_ns, [&](const Key& k, const double* v, int64_t ev) {
      py::object key = str ? py::object(py::str(std::string(k.s))) : py::object(py::int_(k.i));
      out.append(py::make_tuple(key, std::vector<double>(v, v + f), ev));
    });
    return out;
  }

 private:
  std::unique_ptr<FeatureTable> table_;

 public:
  FeatureTable& core() { return *table_; }
};

}  // namespace

rtml::FeatureTable* TableOfPyTable(const py::handle& obj) {
  if (!py::isinstance<PyTable>(obj)) return nullptr;
  return &obj.cast<PyTable&>().core();
}

void BindFeatureTable(py::module_& m) {
  py::class_<PyTable>(m, "FeatureTable", "Core feature table (see rtml.FeatureStore).")
      .def(py::init<const std::string&, uint32_t, uint64_t, int64_t, uint32_t>(), py::arg("key_kind"),
           py::arg("num_fields"), py::arg("capacity"), py::arg("ttl_ns"), py::arg("max_key_bytes"))
      .def("put_many", &PyTable::PutMany, py::arg("keys"), py::arg("values"), py::arg("event_ns"))
      .def("get_many_into", &PyTable::GetManyInto, py::arg("keys"), py::arg("now_ns"), py::arg("out"),
           py::arg("found"), py::arg("age"))
      .def("get", &PyTable::Get, py::arg("key"), py::arg("now_ns"))
      .def("delete", &PyTable::Delete, py::arg("key"))
      .def("sweep", &PyTable::Sweep, py::arg("now_ns"))
      .def("items", &PyTable::Items, py::arg("now_ns"))
      .def("__len__", &PyTable::Size);
}

}  // namespace rtml_bindings

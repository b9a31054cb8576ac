// Binding of rtml::FeatureTable: keys and values in, numpy out; batch calls
// copy keys while holding the GIL and run the table operations without it.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "bindings.h"
#include "rtml/feature_table.h"

namespace py = pybind11;

namespace rtml_bindings {
namespace {

using rtml::FeatureTable;
using rtml::InputError;
using rtml::Key;
using rtml::KeyKind;
using rtml::TableStatus;

// Keys copied out of Python objects so the GIL can be released.
struct KeyBatch {
  std::vector<int64_t> ints;
  std::vector<std::string> strings;
  size_t size() const { return ints.empty() ? strings.size() : ints.size(); }
  Key operator[](size_t i) const { return ints.empty() ? Key::Str(strings[i]) : Key::Int(ints[i]); }
};

const char* StatusText(TableStatus s) {
  switch (s) {
    case TableStatus::kOk: return "ok";
    case TableStatus::kNotFound: return "not found";
    case TableStatus::kStale: return "stale";
    case TableStatus::kFull: return "table full";
    case TableStatus::kKeyTooLong: return "key too long";
    case TableStatus::kBadKeyKind: return "wrong key type";
  }
  return "unknown";
}

class PyTable {
 public:
  PyTable(const std::string& kind, uint32_t num_fields, uint64_t capacity, int64_t ttl_ns,
          uint32_t max_key_bytes) {
    rtml::TableSchema s;
    if (kind == "int") {
      s.key_kind = KeyKind::kInt64;
    } else if (kind == "str") {
      s.key_kind = KeyKind::kString;
    } else {
      throw InputError("key kind must be 'int' or 'str', got '" + kind + "'");
    }
    s.num_fields = num_fields;
    s.capacity = capacity;
    s.ttl_ns = ttl_ns;
    s.max_key_bytes = max_key_bytes;
    table_ = std::make_unique<FeatureTable>(s);
  }

  KeyBatch Keys(const py::handle& keys) const {
    KeyBatch b;
    const bool str = table_->schema().key_kind == KeyKind::kString;
    if (!str && py::isinstance<py::array>(keys)) {
      auto a = py::array::ensure(keys);
      if (a.dtype().kind() != 'i' && a.dtype().kind() != 'u') {
        throw InputError("keys: expected int64 keys for this table, got dtype " +
                         py::str(a.dtype()).cast<std::string>());
      }
      auto ints = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
      b.ints.assign(ints.data(), ints.data() + ints.size());
      return b;
    }
    for (const auto& k : keys) {
      if (str) {
        if (!py::isinstance<py::str>(k)) {
          throw InputError("key " + py::repr(k).cast<std::string>() + ": expected str for this table");
        }
        b.strings.push_back(k.cast<std::string>());
      } else {
        const bool integral = py::isinstance<py::int_>(k) ||
                              (py::hasattr(k, "__index__") && !py::isinstance<py::float_>(k));
        if (!integral || py::isinstance<py::bool_>(k)) {
          throw InputError("key " + py::repr(k).cast<std::string>() + ": expected int for this table");
        }
        b.ints.push_back(k.cast<int64_t>());
      }
    }
    return b;
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
      throw InputError("row " + std::to_string(failed) + " (key " + KeyText(b, failed) +
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
    std::vector<double> row(f);
    for (size_t i = 0; i < n; ++i) {
      int64_t ev = 0;
      const TableStatus s = table_->Get(b[i], now_ns, row.data(), &ev);
      fd[i] = s == TableStatus::kOk;
      for (uint32_t j = 0; j < f; ++j) {
        o[i * f + j] = fd[i] ? static_cast<float>(row[j]) : std::nanf("");
      }
      ag[i] = fd[i] ? static_cast<double>(now_ns - ev) * 1e-9 : std::nan("");
    }
  }

  // One key: (values as a list of float64, event_ns) or None.
  py::object Get(const py::handle& key, int64_t now_ns) {
    const KeyBatch b = Keys(py::make_tuple(key));
    std::vector<double> row(table_->schema().num_fields);
    int64_t ev = 0;
    const TableStatus s = table_->Get(b[0], now_ns, row.data(), &ev);
    if (s == TableStatus::kKeyTooLong || s == TableStatus::kBadKeyKind) {
      throw InputError("key " + KeyText(b, 0) + ": " + StatusText(s));
    }
    if (s != TableStatus::kOk) return py::none();
    return py::make_tuple(row, ev);
  }

  bool Delete(const py::handle& key) {
    const KeyBatch b = Keys(py::make_tuple(key));
    const TableStatus s = table_->Erase(b[0]);
    if (s == TableStatus::kKeyTooLong || s == TableStatus::kBadKeyKind) {
      throw InputError("key " + KeyText(b, 0) + ": " + StatusText(s));
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
  static std::string KeyText(const KeyBatch& b, size_t i) {
    return b.ints.empty() ? "'" + b.strings[i].substr(0, 80) + "'" : std::to_string(b.ints[i]);
  }

  std::unique_ptr<FeatureTable> table_;
};

}  // namespace

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

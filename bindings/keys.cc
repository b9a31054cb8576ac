// Key conversion for the table and window bindings (see keys.h).
#include "keys.h"

#include <pybind11/numpy.h>

#include "rtml/error.h"

namespace py = pybind11;

namespace rtml_bindings {

std::string KeyBatch::Text(size_t i) const {
  if (!is_string_) return std::to_string(ints_[i]);
  const std::string_view s = (*this)[i].s;
  return "'" + std::string(s.substr(0, 80)) + (s.size() > 80 ? "...'" : "'");
}

KeyBatch ToKeys(const py::handle& keys, bool string_keys) {
  KeyBatch b;
  b.is_string_ = string_keys;
  if (py::isinstance<py::array>(keys)) {
    auto a = py::array::ensure(keys);
    const char kind = a.dtype().kind();
    if (!string_keys && (kind == 'i' || kind == 'u')) {
      auto ints = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
      b.ints_.assign(ints.data(), ints.data() + ints.size());
      return b;
    }
    if (kind != 'U' && kind != 'O') {
      throw rtml::InputError(std::string("keys: expected ") + (string_keys ? "str" : "int64") +
                             " keys for this table, got a numpy array of dtype " +
                             py::str(a.dtype()).cast<std::string>());
    }
    return ToKeys(a.attr("tolist")(), string_keys);
  }
  const bool sized = PyList_Check(keys.ptr()) || PyTuple_Check(keys.ptr());
  if (sized) {
    const size_t n = static_cast<size_t>(PySequence_Fast_GET_SIZE(keys.ptr()));
    if (string_keys) {
      b.offsets_.reserve(n + 1);
      b.bytes_.reserve(n * 16);
    } else {
      b.ints_.reserve(n);
    }
  }
  for (const auto& k : keys) {
    PyObject* o = k.ptr();
    if (string_keys) {
      if (!PyUnicode_Check(o)) {
        throw rtml::InputError("key " + py::repr(k).cast<std::string>() + ": expected str for this table");
      }
      Py_ssize_t len = 0;
      const char* utf8 = PyUnicode_AsUTF8AndSize(o, &len);
      if (utf8 == nullptr) throw py::error_already_set();
      b.bytes_.append(utf8, static_cast<size_t>(len));
      b.offsets_.push_back(b.bytes_.size());
      continue;
    }
    if (PyLong_CheckExact(o)) {
      int overflow = 0;
      const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
      if (overflow != 0) throw rtml::InputError("key " + py::repr(k).cast<std::string>() + ": outside int64");
      b.ints_.push_back(v);
      continue;
    }
    const bool integral = py::isinstance<py::int_>(k) || (py::hasattr(k, "__index__") && !PyFloat_Check(o));
    if (!integral || PyBool_Check(o)) {
      throw rtml::InputError("key " + py::repr(k).cast<std::string>() + ": expected int for this table");
    }
    b.ints_.push_back(k.cast<int64_t>());
  }
  return b;
}

rtml::KeyKind KeyKindFromName(const std::string& name) {
  if (name == "int") return rtml::KeyKind::kInt64;
  if (name == "str") return rtml::KeyKind::kString;
  throw rtml::InputError("key kind must be 'int' or 'str', got '" + name + "'");
}

const char* StatusText(rtml::TableStatus s) {
  switch (s) {
    case rtml::TableStatus::kOk: return "ok";
    case rtml::TableStatus::kNotFound: return "not found";
    case rtml::TableStatus::kStale: return "stale";
    case rtml::TableStatus::kFull: return "table full";
    case rtml::TableStatus::kKeyTooLong: return "key too long";
    case rtml::TableStatus::kBadKeyKind: return "wrong key type";
    case rtml::TableStatus::kBadValue: return "value not finite";
  }
  return "unknown";
}

}  // namespace rtml_bindings

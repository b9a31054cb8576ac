// Key conversion for the table and window bindings (see keys.h).
#include "keys.h"

#include <pybind11/numpy.h>

#include <cstring>

#include "rtml/error.h"

namespace py = pybind11;

namespace rtml_bindings {

std::string KeyBatch::Text(size_t i) const {
  if (!keys_[i].is_string) return std::to_string(keys_[i].i);
  const std::string_view s = keys_[i].s;
  return "'" + std::string(s.substr(0, 80)) + (s.size() > 80 ? "...'" : "'");
}

namespace {

int64_t IntKey(const py::handle& k) {
  PyObject* o = k.ptr();
  if (PyLong_CheckExact(o)) {
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow != 0) throw rtml::InputError("key " + py::repr(k).cast<std::string>() + ": outside int64");
    return v;
  }
  const bool integral = py::isinstance<py::int_>(k) || (py::hasattr(k, "__index__") && !PyFloat_Check(o));
  if (!integral || PyBool_Check(o)) {
    throw rtml::InputError("key " + py::repr(k).cast<std::string>() + ": expected int for this table");
  }
  return k.cast<int64_t>();
}

}  // namespace

KeyBatch ToKeys(const py::handle& keys, bool string_keys) {
  KeyBatch b;
  if (py::isinstance<py::array>(keys)) {
    auto a = py::array::ensure(keys);
    const char kind = a.dtype().kind();
    if (!string_keys && (kind == 'i' || kind == 'u')) {
      auto ints = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
      b.keys_.reserve(static_cast<size_t>(ints.size()));
      for (py::ssize_t i = 0; i < ints.size(); ++i) b.keys_.push_back(rtml::Key::Int(ints.data()[i]));
      return b;
    }
    if (kind != 'U' && kind != 'O') {
      throw rtml::InputError(std::string("keys: expected ") + (string_keys ? "str" : "int64") +
                             " keys for this table, got a numpy array of dtype " +
                             py::str(a.dtype()).cast<std::string>());
    }
    return ToKeys(a.attr("tolist")(), string_keys);
  }
  // Raw CPython calls over the items: this loop is most of a batch read's cost
  // (a list or tuple is used as is; another iterable becomes a list first).
  const py::object seq = py::reinterpret_steal<py::object>(PySequence_Fast(keys.ptr(), "keys must be iterable"));
  if (!seq) throw py::error_already_set();
  const size_t n = static_cast<size_t>(PySequence_Fast_GET_SIZE(seq.ptr()));
  PyObject** items = PySequence_Fast_ITEMS(seq.ptr());
  b.keys_.reserve(n);
  if (!string_keys) {
    for (size_t i = 0; i < n; ++i) b.keys_.push_back(rtml::Key::Int(IntKey(items[i])));
    return b;
  }
  // Two passes: the first views each key's UTF-8 bytes inside its str object
  // (alive and unchanged while the GIL is held) and sums their lengths, so the
  // buffer is sized once; the second copies them and points the keys there.
  size_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    PyObject* o = items[i];
    if (!PyUnicode_Check(o)) {
      throw rtml::InputError("key " + py::repr(o).cast<std::string>() + ": expected str for this table");
    }
    Py_ssize_t len = 0;
    const char* utf8 = PyUnicode_AsUTF8AndSize(o, &len);
    if (utf8 == nullptr) {
      PyErr_Clear();
      throw rtml::InputError("key " + py::repr(o).cast<std::string>() + ": not encodable as UTF-8");
    }
    b.keys_.push_back(rtml::Key::Str(std::string_view(utf8, static_cast<size_t>(len))));
    total += static_cast<size_t>(len);
  }
  b.bytes_.resize(total);
  char* at = b.bytes_.data();
  for (rtml::Key& k : b.keys_) {
    if (!k.s.empty()) std::memcpy(at, k.s.data(), k.s.size());
    k.s = std::string_view(at, k.s.size());
    at += k.s.size();
  }
  return b;
}

void CheckKeyLengths(const KeyBatch& b, uint32_t max_key_bytes, const char* what) {
  for (size_t i = 0; i < b.size(); ++i) {
    const rtml::Key& k = b[i];
    if (k.is_string && k.s.size() > max_key_bytes) {
      throw rtml::InputError(std::string(what) + " " + std::to_string(i) + ": key " + b.Text(i) + " is too long (" +
                             std::to_string(k.s.size()) + " bytes, max_key_bytes=" + std::to_string(max_key_bytes) +
                             "); nothing was stored");
    }
  }
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

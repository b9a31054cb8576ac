// Entity keys copied out of Python objects (so the GIL can be released while
// the core uses them), shared by the table and window bindings.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "rtml/feature_table.h"

namespace rtml_bindings {

// int64 keys, or string keys stored back to back in one buffer.
class KeyBatch {
 public:
  size_t size() const { return is_string_ ? offsets_.size() - 1 : ints_.size(); }
  rtml::Key operator[](size_t i) const {
    if (!is_string_) return rtml::Key::Int(ints_[i]);
    return rtml::Key::Str(std::string_view(bytes_.data() + offsets_[i], offsets_[i + 1] - offsets_[i]));
  }
  // The key as it appears in an error message.
  std::string Text(size_t i) const;

 private:
  friend KeyBatch ToKeys(const pybind11::handle& keys, bool string_keys);
  bool is_string_ = false;
  std::vector<int64_t> ints_;
  std::string bytes_;
  std::vector<size_t> offsets_{0};
};

// Keys from a list/tuple/iterable of str or int, or a numpy array (int64 for
// int tables; str or object for str tables). Throws InputError naming the
// first key of the wrong type (None, NaN, float, bool, str for an int table).
KeyBatch ToKeys(const pybind11::handle& keys, bool string_keys);

rtml::KeyKind KeyKindFromName(const std::string& name);
const char* StatusText(rtml::TableStatus s);

}  // namespace rtml_bindings

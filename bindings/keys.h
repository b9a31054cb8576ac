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

// int64 keys, or string keys whose bytes are stored back to back in one
// buffer; the keys themselves are contiguous (for FeatureTable::GetMany).
class KeyBatch {
 public:
  KeyBatch() = default;
  KeyBatch(KeyBatch&&) noexcept = default;
  KeyBatch& operator=(KeyBatch&&) noexcept = default;
  // Move-only: the keys view bytes_, so a copy's keys would view the original.
  KeyBatch(const KeyBatch&) = delete;
  KeyBatch& operator=(const KeyBatch&) = delete;

  size_t size() const { return keys_.size(); }
  const rtml::Key& operator[](size_t i) const { return keys_[i]; }
  const rtml::Key* data() const { return keys_.data(); }
  // The key as it appears in an error message.
  std::string Text(size_t i) const;

 private:
  friend KeyBatch ToKeys(const pybind11::handle& keys, bool string_keys);
  std::vector<rtml::Key> keys_;
  std::vector<char> bytes_;  // a vector: moving the batch keeps the keys' views valid
};

// Keys from a list/tuple/iterable of str or int, or a numpy array (int64 for
// int tables; str or object for str tables). Throws InputError naming the
// first key of the wrong type (None, NaN, float, bool, str for an int table).
KeyBatch ToKeys(const pybind11::handle& keys, bool string_keys);

// Throws InputError for the first key longer than max_key_bytes, naming it as
// "<what> <index>"; called before a batch writes anything (all-or-nothing).
void CheckKeyLengths(const KeyBatch& b, uint32_t max_key_bytes, const char* what);

rtml::KeyKind KeyKindFromName(const std::string& name);
const char* StatusText(rtml::TableStatus s);

}  // namespace rtml_bindings

// rtml error types.
//
// Setup paths (model build, load, save, config) throw subclasses of rtml::Error;
// hot paths are noexcept and report failure through rtml::Status. The bindings map
// each class onto the Python exception of the same name under rtml.RtmlError, so
// the hierarchy is declared once, here.
//
// Thread-safety: the types are plain values; no shared state.
#pragma once

#include <stdexcept>
#include <string>

namespace rtml {

// Base of every error rtml raises.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The caller's input is wrong: shape, dtype, a value a model cannot take.
class InputError : public Error {
 public:
  using Error::Error;
};

// A model file or buffer is unreadable: unknown type, truncated, corrupted,
// written by a newer format version.
class ModelFormatError : public Error {
 public:
  using Error::Error;
};

// A model uses a feature rtml cannot evaluate exactly; raised instead of ever
// returning a silently different score.
class UnsupportedModelError : public Error {
 public:
  using Error::Error;
};

// A feature-store snapshot is unreadable: truncated, corrupted, written by a
// newer format version, or inconsistent with the schema it claims.
class SnapshotError : public Error {
 public:
  using Error::Error;
};

// Result of a hot-path call. kOk is zero so `if (status)` reads as "failed".
enum class Status : int {
  kOk = 0,
  kBadShape = 1,
  kBadDType = 2,
};

}  // namespace rtml

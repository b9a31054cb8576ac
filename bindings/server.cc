// Binding of the server engine (rtml._core.Engine) and its C API capsule.
// Placeholder until the engine lands.
#include <pybind11/pybind11.h>

#include "bindings.h"

namespace rtml_bindings {
void BindServer(pybind11::module_& m) { (void)m; }
}  // namespace rtml_bindings

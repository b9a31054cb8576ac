// Binding of the wire codec (rtml._core.wire): encoders and decoders the
// Python clients and the server's Python-side handlers use. Placeholder until
// the codec binding lands.
#include <pybind11/pybind11.h>

#include "bindings.h"

namespace rtml_bindings {
void BindWire(pybind11::module_& m) { (void)m.def_submodule("wire", "rtml wire protocol codec"); }
}  // namespace rtml_bindings

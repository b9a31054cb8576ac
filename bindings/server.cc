// Binding of the server engine (rtml._core.Engine) and its C API capsule
// (bindings/server_capi.h) for the Cython protocol in rtml/_wire.pyx.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <new>
#include <string>
#include <vector>

#include "bindings.h"
#include "rtml/engine.h"
#include "server_capi.h"

namespace py = pybind11;

namespace rtml_bindings {
namespace {

using rtml::server::Engine;
using rtml::server::EngineConfig;
using rtml::server::FieldKind;
using rtml::server::Session;

// ---- the C API: thin, noexcept wrappers over Session ----
void* SessionNew(uintptr_t engine) {
  try {
    return new Session(reinterpret_cast<Engine*>(engine));
  } catch (...) {
    return nullptr;
  }
}
void SessionFree(void* s) { delete static_cast<Session*>(s); }
size_t SessionHandle(void* s, const uint8_t* in, size_t n, size_t max_frames, int* action, size_t* frames) {
  const Session::Result r = static_cast<Session*>(s)->Handle(in, n, max_frames);
  *action = static_cast<int>(r.action);
  *frames = r.frames;
  return r.consumed;
}
void SessionDeferred(void* s, uint16_t* opcode, uint64_t* request_id, uint32_t* payload_len) {
  const rtml::wire::Frame& f = static_cast<Session*>(s)->deferred();
  *opcode = f.header.opcode;
  *request_id = f.header.request_id;
  *payload_len = f.header.payload_len;
}
const char* SessionOut(void* s, size_t* len) {
  const std::string& out = static_cast<Session*>(s)->out();
  *len = out.size();
  return out.data();
}
void SessionClearOut(void* s) { static_cast<Session*>(s)->ClearOut(); }
int SessionAppendOut(void* s, const uint8_t* data, size_t n) {
  try {
    static_cast<Session*>(s)->AppendOut(data, n);
    return 0;
  } catch (...) {
    return -1;
  }
}

const rtml_server_capi kCApi = {
    RTML_SERVER_CAPI_VERSION, sizeof(rtml_server_capi), SessionNew, SessionFree, SessionHandle,
    SessionDeferred,          SessionOut,               SessionClearOut, SessionAppendOut,
};

FieldKind FieldKindOf(const std::string& dtype) {
  if (dtype == "float64") return FieldKind::kFloat64;
  if (dtype == "float32") return FieldKind::kFloat32;
  if (dtype.rfind("int", 0) == 0 || dtype.rfind("uint", 0) == 0 || dtype == "bool") return FieldKind::kInteger;
  throw rtml::InputError("unknown field dtype '" + dtype + "'");
}

// Owns the engine and keeps the Python objects its registry points into alive.
class PyEngine {
 public:
  PyEngine(const std::string& token, bool admin, uint32_t max_in_flight, uint32_t max_payload,
           const std::string& server_name) {
    EngineConfig c;
    c.token = token;
    c.admin = admin;
    c.max_in_flight = max_in_flight;
    c.limits.max_payload = max_payload;
    c.server_name = server_name;
    engine_ = std::make_unique<Engine>(std::move(c));
  }

  void SetScorer(const std::string& name, const py::object& scorer) {
    rtml::ScoreObserver* observer = nullptr;
    const rtml::Scorer* s = ScorerOfPyScorer(scorer, &observer);
    if (s == nullptr) throw rtml::InputError("set_scorer: expected a core Scorer (rtml.Scorer._core)");
    engine_->SetScorer(name, s, observer);
    keep_[("scorer:" + name).c_str()] = scorer;
  }
  void SetModel(const std::string& name, const py::object& forest) {
    engine_->SetModel(name, std::make_shared<const rtml::Forest>(forest.cast<const rtml::Forest&>()));
  }
  bool RemoveModel(const std::string& name) { return engine_->RemoveModel(name); }
  void SetTable(const std::string& name, const py::object& table, const std::vector<std::string>& dtypes,
                int64_t max_future_ns) {
    rtml::FeatureTable* t = TableOfPyTable(table);
    if (t == nullptr) throw rtml::InputError("set_table: expected a core FeatureTable");
    std::vector<FieldKind> kinds;
    for (const auto& d : dtypes) kinds.push_back(FieldKindOf(d));
    engine_->SetTable(name, t, std::move(kinds), max_future_ns);
    keep_[("table:" + name).c_str()] = table;
  }
  void SetWindows(const std::string& name, const py::object& windows, int64_t max_future_ns) {
    rtml::WindowTable* w = WindowsOfPyWindows(windows);
    if (w == nullptr) throw rtml::InputError("set_windows: expected a core WindowTable");
    engine_->SetWindows(name, w, max_future_ns);
    keep_[("windows:" + name).c_str()] = windows;
  }
  py::dict Counters() const {
    const Engine::Counters c = engine_->counters();
    py::dict d;
    d["frames"] = c.frames;
    d["errors"] = c.errors;
    d["deferred"] = c.deferred;
    d["fatal"] = c.fatal;
    return d;
  }
  uintptr_t Address() const { return reinterpret_cast<uintptr_t>(engine_.get()); }
  Engine& engine() { return *engine_; }

 private:
  std::unique_ptr<Engine> engine_;
  py::dict keep_;
};

}  // namespace

void BindServer(py::module_& m) {
  py::class_<PyEngine>(m, "Engine", "Core server engine (see rtml.server.Server).")
      .def(py::init<const std::string&, bool, uint32_t, uint32_t, const std::string&>(), py::arg("token"),
           py::arg("admin"), py::arg("max_in_flight"), py::arg("max_payload"), py::arg("server_name"))
      .def("set_scorer", &PyEngine::SetScorer, py::arg("name"), py::arg("scorer"))
      .def("set_model", &PyEngine::SetModel, py::arg("name"), py::arg("forest"))
      .def("remove_model", &PyEngine::RemoveModel, py::arg("name"))
      .def("set_table", &PyEngine::SetTable, py::arg("name"), py::arg("table"), py::arg("dtypes"),
           py::arg("max_future_ns"))
      .def("set_windows", &PyEngine::SetWindows, py::arg("name"), py::arg("windows"), py::arg("max_future_ns"))
      .def("begin_drain", [](PyEngine& e) { e.engine().BeginDrain(); })
      .def_property_readonly("draining", [](PyEngine& e) { return e.engine().draining(); })
      .def("counters", &PyEngine::Counters)
      .def("address", &PyEngine::Address);
  m.attr("_server_capi") =
      py::capsule(static_cast<const void*>(&kCApi), RTML_SERVER_CAPI_CAPSULE);
}

}  // namespace rtml_bindings

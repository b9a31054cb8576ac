// Binding of rtml::Forest: numpy in, numpy (or a float) out, GIL released for
// batches.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bindings.h"
#include "rtml/forest.h"

namespace py = pybind11;

namespace rtml_bindings {
namespace {

using rtml::DType;
using rtml::Forest;
using rtml::ForestSpec;
using rtml::InputError;
using rtml::MatrixView;
using rtml::TreeSpec;

template <typename T>
std::vector<T> Vec(const py::dict& d, const char* key) {
  if (!d.contains(key)) return {};
  auto a = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(d[key]);
  if (!a) throw InputError(std::string("tree field '") + key + "' is not an array");
  return std::vector<T>(a.data(), a.data() + a.size());
}

TreeSpec TreeFromDict(const py::dict& d) {
  TreeSpec t;
  t.node_type = Vec<int8_t>(d, "node_type");
  t.left = Vec<int32_t>(d, "cleft");
  t.right = Vec<int32_t>(d, "cright");
  t.feature = Vec<int32_t>(d, "split_index");
  t.threshold = Vec<double>(d, "threshold");
  t.cmp = Vec<int8_t>(d, "cmp");
  t.default_left = Vec<uint8_t>(d, "default_left");
  t.category_list_right_child = Vec<uint8_t>(d, "category_list_right_child");
  t.leaf_value = Vec<double>(d, "leaf_value");
  t.leaf_vector = Vec<double>(d, "leaf_vector");
  t.leaf_vector_begin = Vec<int64_t>(d, "leaf_vector_begin");
  t.leaf_vector_end = Vec<int64_t>(d, "leaf_vector_end");
  t.category_list = Vec<uint32_t>(d, "category_list");
  t.category_list_begin = Vec<int64_t>(d, "category_list_begin");
  t.category_list_end = Vec<int64_t>(d, "category_list_end");
  t.target_id = d["target_id"].cast<int32_t>();
  t.class_id = d["class_id"].cast<int32_t>();
  return t;
}

rtml::OutputKind OutputKindFromName(const std::string& s) {
  if (s == "plain") return rtml::OutputKind::kPlain;
  if (s == "binary_proba") return rtml::OutputKind::kBinaryProba;
  if (s == "negate") return rtml::OutputKind::kNegate;
  if (s == "argmax") return rtml::OutputKind::kArgmax;
  throw InputError("unknown output kind '" + s + "'");
}

const char* OutputKindName(rtml::OutputKind k) {
  switch (k) {
    case rtml::OutputKind::kPlain: return "plain";
    case rtml::OutputKind::kBinaryProba: return "binary_proba";
    case rtml::OutputKind::kNegate: return "negate";
    case rtml::OutputKind::kArgmax: return "argmax";
  }
  return "unknown";
}

Forest Build(const py::dict& h, const py::list& trees) {
  ForestSpec s;
  s.num_feature = h["num_feature"].cast<int32_t>();
  s.num_target = h["num_target"].cast<int32_t>();
  s.num_class = h["num_class"].cast<std::vector<int32_t>>();
  s.leaf_vector_shape = h["leaf_vector_shape"].cast<std::vector<int32_t>>();
  s.average_tree_output = h["average_tree_output"].cast<bool>();
  s.postprocessor = rtml::PostprocessorFromName(h["postprocessor"].cast<std::string>());
  s.sigmoid_alpha = h["sigmoid_alpha"].cast<double>();
  s.ratio_c = h["ratio_c"].cast<double>();
  s.base_scores = h["base_scores"].cast<std::vector<double>>();
  const auto precision = h["precision"].cast<std::string>();
  if (precision != "float32" && precision != "float64") {
    throw InputError("precision must be 'float32' or 'float64', got '" + precision + "'");
  }
  s.precision = precision == "float64" ? rtml::Precision::kFloat64 : rtml::Precision::kFloat32;
  s.output_kind = OutputKindFromName(h["output_kind"].cast<std::string>());
  s.metadata = h["metadata"].cast<std::string>();
  s.flush_tiny_to_zero = h.contains("flush_tiny_to_zero") && h["flush_tiny_to_zero"].cast<bool>();
  s.raw_sums_trees = h.contains("raw_sums_trees") && h["raw_sums_trees"].cast<bool>();
  s.truncate_categories = h.contains("truncate_categories") && h["truncate_categories"].cast<bool>();
  if (h.contains("feature_rule")) s.feature_rule = h["feature_rule"].cast<std::vector<uint8_t>>();
  if (h.contains("known_categories")) {
    s.known_categories = h["known_categories"].cast<std::vector<uint32_t>>();
  }
  if (h.contains("reject")) s.reject = h["reject"].cast<uint8_t>();
  s.trees.reserve(trees.size());
  for (const auto& t : trees) s.trees.push_back(TreeFromDict(t.cast<py::dict>()));
  py::gil_scoped_release release;
  return Forest::Build(s);
}

// Describes a numpy array to the core without copying it. Returns false when
// the memory is not a float32/float64 array addressable by element strides
// (the caller converts and retries).
bool ViewOf(const py::array& a, MatrixView* v) {
  const int type = a.dtype().num();
  DType dtype;
  if (type == py::detail::npy_api::NPY_FLOAT_) {
    dtype = DType::kFloat32;
  } else if (type == py::detail::npy_api::NPY_DOUBLE_) {
    dtype = DType::kFloat64;
  } else {
    return false;
  }
  const auto item = static_cast<py::ssize_t>(a.itemsize());
  if (reinterpret_cast<uintptr_t>(a.data()) % static_cast<uintptr_t>(item) != 0) return false;
  const py::ssize_t nd = a.ndim();
  if (nd == 2) {
    if (a.strides(0) % item != 0 || a.strides(1) % item != 0) return false;
    v->rows = a.shape(0);
    v->cols = a.shape(1);
    v->row_stride = a.strides(0) / item;
    v->col_stride = a.strides(1) / item;
  } else {
    if (a.strides(0) % item != 0) return false;
    v->rows = 1;
    v->cols = a.shape(0);
    v->row_stride = 0;
    v->col_stride = a.strides(0) / item;
  }
  v->data = a.data();
  v->dtype = dtype;
  return true;
}

MatrixView CheckedView(const Forest& f, py::array& x, py::ssize_t want_ndim) {
  if (x.ndim() != want_ndim) {
    throw InputError("X must be " + std::to_string(want_ndim) + "-D, got " +
                     std::to_string(x.ndim()) + "-D");
  }
  MatrixView v;
  if (!ViewOf(x, &v)) {
    const char kind = x.dtype().kind();
    if (kind != 'b' && kind != 'i' && kind != 'u' && kind != 'f') {
      throw InputError("X has dtype " + py::str(x.dtype()).cast<std::string>() +
                       ": expected a numeric array (float32 or float64)");
    }
    x = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(x);
    if (!x || !ViewOf(x, &v)) throw InputError("X must be a numeric array (float32 or float64)");
  }
  if (v.cols != f.num_features()) {
    throw InputError("X has " + std::to_string(v.cols) + " features, the model expects " +
                     std::to_string(f.num_features()));
  }
  int64_t row = 0;
  int64_t col = 0;
  if (f.FindRejected(v, &row, &col)) {
    const bool nan = (f.rejects() & rtml::kRejectNaN) != 0;
    throw InputError("X[" + std::to_string(row) + ", " + std::to_string(col) + "] is " +
                     (nan ? "NaN or " : "") + "infinite or beyond float32 range: the native " +
                     "library refuses such input for this model (expected finite values" +
                     (nan ? ", no missing values)" : ")"));
  }
  return v;
}

void CheckStatus(rtml::Status s) {
  if (s != rtml::Status::kOk) throw InputError("prediction failed (status " + std::to_string(static_cast<int>(s)) + ")");
}

py::array_t<double> PredictBatch(const Forest& f, py::array x, bool raw, int n_threads) {
  const MatrixView v = CheckedView(f, x, 2);
  const int32_t cols = f.num_columns(raw);
  py::array_t<double> out = cols == 1 ? py::array_t<double>({v.rows})
                                      : py::array_t<double>({v.rows, static_cast<py::ssize_t>(cols)});
  double* o = out.mutable_data();
  rtml::Status s;
  {
    py::gil_scoped_release release;
    s = f.Predict(v, o, raw, n_threads);
  }
  CheckStatus(s);
  return out;
}

// The single-row fast path: nothing but the row and the result cross the
// binding, and a single-output model returns a Python float.
py::object PredictRow(const Forest& f, py::array x, bool raw) {
  const MatrixView v = CheckedView(f, x, 1);
  const int32_t cols = f.num_columns(raw);
  if (cols == 1) {
    double value = 0.0;
    CheckStatus(f.Predict(v, &value, raw, 1));
    return py::float_(value);
  }
  py::array_t<double> out(static_cast<py::ssize_t>(cols));
  CheckStatus(f.Predict(v, out.mutable_data(), raw, 1));
  return std::move(out);
}

}  // namespace

void BindForest(py::module_& m) {
  py::class_<Forest>(m, "Forest", "A compiled tree ensemble (see rtml.Model).")
      .def_static("build", &Build, py::arg("header"), py::arg("trees"))
      .def_static("load", &Forest::Load, py::arg("path"), py::call_guard<py::gil_scoped_release>())
      .def_static(
          "from_bytes",
          [](const py::bytes& b) {
            std::string_view s = b;
            return Forest::FromBytes(reinterpret_cast<const uint8_t*>(s.data()), s.size());
          },
          py::arg("data"))
      .def("to_bytes", [](const Forest& f) { return py::bytes(f.ToBytes()); })
      .def("save", &Forest::Save, py::arg("path"), py::call_guard<py::gil_scoped_release>())
      .def("predict", &PredictBatch, py::arg("X"), py::arg("raw"), py::arg("n_threads"))
      .def("predict_row", &PredictRow, py::arg("x"), py::arg("raw"))
      .def("num_columns", &Forest::num_columns, py::arg("raw"))
      .def_property_readonly("num_features", &Forest::num_features)
      .def_property_readonly("num_trees", &Forest::num_trees)
      .def_property_readonly("num_slots", &Forest::num_slots)
      .def_property_readonly("num_target", &Forest::num_target)
      .def_property_readonly("num_class", &Forest::num_class)
      .def_property_readonly("num_nodes", &Forest::num_nodes)
      .def_property_readonly("max_depth", &Forest::max_depth)
      .def_property_readonly("average_tree_output", &Forest::average_tree_output)
      .def_property_readonly("postprocessor",
                             [](const Forest& f) { return rtml::PostprocessorName(f.postprocessor()); })
      .def_property_readonly("precision",
                             [](const Forest& f) {
                               return f.precision() == rtml::Precision::kFloat64 ? "float64" : "float32";
                             })
      .def_property_readonly("output_kind", [](const Forest& f) { return OutputKindName(f.output_kind()); })
      .def_property_readonly("metadata", &Forest::metadata);
}

}  // namespace rtml_bindings

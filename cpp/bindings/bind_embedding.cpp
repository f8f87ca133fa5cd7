// Bindings for the embedding lookup: check the table, ids and gradients, release the GIL, call rnnext/embedding.h.
#include "bindings/checks.h"
#include "rnnext/embedding.h"

#include <string>
#include <vector>

namespace rnnext::bindings {
namespace {

// The table's V and D from a [V, D] array named `name`.
std::pair<py::ssize_t, py::ssize_t> table_shape(const Args& args, const char* name, const py::handle& obj) {
  const py::array table = args.numpy(name, obj);
  if (table.ndim() != 2) args.fail_value(std::string(name) + " has shape " + shape_string(table) + ", expected (V, D)");
  return {table.shape(0), table.shape(1)};
}

// ids: integers of any shape with 0 <= id < V, returned as C-contiguous int64. Unsigned ids are checked before the
// cast, so 2**63 and above are reported as they are, not as negative numbers.
CArray<int64_t> checked_ids(const Args& args, const py::handle& obj, py::ssize_t V) {
  py::array ids;
  try {
    ids = py::module_::import("numpy").attr("asarray")(obj);
  } catch (py::error_already_set& error) {
    if (!error.matches(PyExc_ValueError) && !error.matches(PyExc_TypeError) && !error.matches(PyExc_OverflowError))
      throw;
    args.fail_type(std::string("ids is not an array of integers (") + error.what() + ")");
  }
  const char kind = ids.dtype().kind();
  if (kind != 'i' && kind != 'u')
    args.fail_type("ids has dtype " + std::string(py::str(ids.dtype())) + ", expected an integer dtype");
  const auto fail_range = [&](const std::string& value) {
    args.fail_value("ids contains " + value + ", expected ids in [0, V=" + std::to_string(V) + ")");
  };
  const auto as_c_array = [&](const char* dtype) { return ids.attr("astype")(dtype, py::arg("order") = "C"); };
  if (kind == 'u') {
    const auto unsigned_ids = CArray<uint64_t>::ensure(as_c_array("uint64"));
    for (py::ssize_t k = 0; k < unsigned_ids.size(); ++k)
      if (unsigned_ids.data()[k] >= uint64_t(V)) fail_range(std::to_string(unsigned_ids.data()[k]));
  }
  auto out = CArray<int64_t>::ensure(as_c_array("int64"));
  for (py::ssize_t k = 0; k < out.size(); ++k)
    if (out.data()[k] < 0 || out.data()[k] >= V) fail_range(std::to_string(out.data()[k]));
  return out;
}

// ids.shape + (D,): the shape of the output and of its gradient.
std::vector<Dim> rows_shape(const CArray<int64_t>& ids, py::ssize_t D) {
  std::vector<Dim> dims;
  for (py::ssize_t k = 0; k < ids.ndim(); ++k) dims.push_back({"", ids.shape(k)});
  dims.push_back({"D", D});
  return dims;
}

// padding_idx: None (-1 here) or an integer in [0, V).
int64_t checked_padding(const Args& args, const py::handle& obj, py::ssize_t V) {
  if (obj.is_none()) return -1;
  if (PyBool_Check(obj.ptr()) || !PyIndex_Check(obj.ptr()))
    args.fail_type("padding_idx is " + std::string(py::str(py::type::of(obj))) + ", expected None or an int");
  const py::int_ value = py::reinterpret_steal<py::int_>(PyNumber_Index(obj.ptr()));
  if (!value) throw py::error_already_set();
  int overflow = 0;
  const long long index = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
  if (overflow != 0 || index < 0 || index >= V)
    args.fail_value("padding_idx is " + std::string(py::str(value)) + ", expected None or an integer in [0, V=" +
                    std::to_string(V) + ")");
  return index;
}

template <typename Scalar>
py::array embedding_forward_impl(const Args& args, py::handle table_obj, py::handle ids_obj, py::handle out_obj) {
  const auto [V, D] = table_shape(args, "table", table_obj);
  auto table = args.array<Scalar>("table", table_obj, {{"V", V}, {"D", D}});
  const CArray<int64_t> ids = checked_ids(args, ids_obj, V);
  const std::vector<Dim> dims = rows_shape(ids, D);
  std::vector<py::ssize_t> shape;
  for (const Dim& dim : dims) shape.push_back(dim.size);
  CArray<Scalar> y = out_obj.is_none() ? new_array<Scalar>(shape) : args.inplace_array<Scalar>("out", out_obj, dims);
  {
    py::gil_scoped_release release;
    embedding_forward(y.mutable_data(), table.data(), ids.data(), Index(ids.size()), Index(D));
  }
  return y;
}

template <typename Scalar>
void embedding_backward_impl(const Args& args, py::handle grad_obj, py::handle dy_obj, py::handle ids_obj,
                             py::handle padding_obj) {
  const auto [V, D] = table_shape(args, "table_grad", grad_obj);
  auto table_grad = args.inplace_array<Scalar>("table_grad", grad_obj, {{"V", V}, {"D", D}});
  const CArray<int64_t> ids = checked_ids(args, ids_obj, V);
  auto dy = args.array<Scalar>("dy", dy_obj, rows_shape(ids, D));
  const int64_t padding_idx = checked_padding(args, padding_obj, V);
  py::gil_scoped_release release;
  embedding_backward(table_grad.mutable_data(), dy.data(), ids.data(), Index(ids.size()), Index(D), padding_idx);
}

}  // namespace

void bind_embedding(py::module_& m) {
  m.def(
      "embedding_forward",
      [](py::handle table, py::handle ids, py::handle out) {
        const Args args("embedding_forward");
        if (args.is_float32("table", table)) return embedding_forward_impl<float>(args, table, ids, out);
        return embedding_forward_impl<double>(args, table, ids, out);
      },
      py::arg("table"), py::arg("ids"), py::arg("out") = py::none(),
      "Rows of table [V, D] by integer ids of any shape, 0 <= id < V: returns y [*ids.shape, D] (written into "
      "out when given).");
  m.def(
      "embedding_backward",
      [](py::handle table_grad, py::handle dy, py::handle ids, py::handle padding_idx) {
        const Args args("embedding_backward");
        if (args.is_float32("table_grad", table_grad)) {
          embedding_backward_impl<float>(args, table_grad, dy, ids, padding_idx);
        } else {
          embedding_backward_impl<double>(args, table_grad, dy, ids, padding_idx);
        }
      },
      py::arg("table_grad"), py::arg("dy"), py::arg("ids"), py::arg("padding_idx") = py::none(),
      "Add dy [*ids.shape, D] into the rows of table_grad [V, D] picked by ids, in place, skipping padding_idx; "
      "repeated ids add up in id order, bitwise the same for any thread count (and as np.add.at).");
}

}  // namespace rnnext::bindings

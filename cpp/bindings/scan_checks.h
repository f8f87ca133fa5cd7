// What the bindings of the elementwise-recurrence cells (bind_indrnn.cpp, bind_min_cells.cpp, bind_sru.cpp,
// bind_qrnn.cpp) share on top of checks.h: their bind_* declarations, the argument that fixes H when a cell has
// no recurrent kernel, and h_n.
#pragma once

#include "bindings/checks.h"

namespace rnnext::bindings {

void bind_indrnn(py::module_& m);
void bind_min_cells(py::module_& m);
void bind_sru(py::module_& m);
void bind_qrnn(py::module_& m);

// H from kernel [I, G*H] (cells whose gates all read x only): I must be x's, G*H a positive multiple of G.
inline py::ssize_t hidden_from_kernel(const Args& args, const py::handle& kernel, py::ssize_t I, py::ssize_t G,
                                      const char* gates_label) {
  py::array k = args.numpy("kernel", kernel);
  if (k.ndim() != 2 || k.shape(0) != I || k.shape(1) < G || k.shape(1) % G != 0)
    args.fail_value("kernel has shape " + shape_string(k) + ", expected (I=" + std::to_string(I) + ", " +
                    gates_label + ") with H >= 1");
  return k.shape(1) / G;
}

// h_n [N, H], the last slot of the states h [T+1, N, H].
template <typename Scalar>
CArray<Scalar> last_state(const CArray<Scalar>& h, py::ssize_t T, py::ssize_t N, py::ssize_t H) {
  auto h_n = new_array<Scalar>({N, H});
  std::copy_n(h.data() + T * N * H, N * H, h_n.mutable_data());
  return h_n;
}

}  // namespace rnnext::bindings

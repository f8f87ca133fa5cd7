// Dense (fully connected) layer, forward and backward side by side: y = act(x . kernel + bias) over M rows.
//   M rows (a batch, or a batch of sequences flattened to N*T rows), F input features, U units.
//   x [M, F], kernel [F, U], bias [U], y [M, U]; act in {linear, sigmoid, tanh, relu, softmax over a row's U units}.
// The products are the engine's chunked GEMMs (gemm.h), the pointwise passes run over fixed chunks of rows, and a
// row's softmax sums in a fixed order (row_ops.h): results do not depend on the thread count.
// Backward assigns dx and ADDS the weight gradients into the caller's buffers (a layer's Parameter.grad), so
// no [F, U] temporary is allocated and added afterwards. Derivatives are written on the output y.
#pragma once

#include "rnnext/common.h"
#include "rnnext/gemm.h"
#include "rnnext/row_ops.h"

namespace rnnext {

enum class DenseActivation { Linear, Sigmoid, Tanh, Relu, Softmax };

// y [U] = act(a), in place.
template <typename Scalar, DenseActivation Act>
void activate_row(Scalar* y, Index U) {
  VectorMap<Scalar> out(y, U);
  if constexpr (Act == DenseActivation::Sigmoid) out = sigmoid(out);
  if constexpr (Act == DenseActivation::Tanh) out = tanh_of(out);
  if constexpr (Act == DenseActivation::Relu) out = out.max(Scalar(0));
  if constexpr (Act == DenseActivation::Softmax) {
    exp_shifted(y, y, U, row_max(y, U));
    out /= Scalar(sum_in_double(y, U));
  }
}

// da [U] = dy * act'(a), from the output y.
template <typename Scalar, DenseActivation Act>
void through_activation_row(Scalar* da, const Scalar* dy, const Scalar* y_row, Index U) {
  VectorMap<Scalar> grad(da, U);
  const ConstVectorMap<Scalar> up(dy, U), y(y_row, U);
  if constexpr (Act == DenseActivation::Sigmoid) grad = up * (y * (Scalar(1) - y));
  if constexpr (Act == DenseActivation::Tanh) grad = up * (Scalar(1) - y * y);
  if constexpr (Act == DenseActivation::Relu) grad = (y > Scalar(0)).select(up, Scalar(0));
  // softmax: J^T dy with J = diag(y) - y y^T
  if constexpr (Act == DenseActivation::Softmax) grad = y * (up - Scalar(dot_in_double(dy, y_row, U)));
}

// Forward: y = act(x . kernel + bias).
template <typename Scalar, DenseActivation Act>
void dense_forward(Scalar* y /* [M, U] */, const Scalar* x /* [M, F] */, const Scalar* kernel /* [F, U] */,
                   const Scalar* bias /* [U] */, Index M, Index F, Index U) {
  rows_times_weight(y, U, x, F, M, F, kernel, U, U, false, bias, false);
  if constexpr (Act != DenseActivation::Linear)
    for_each_row(M, kPointwiseCost * double(U), [&](Index row) { activate_row<Scalar, Act>(y + row * U, U); });
}

// Backward: dx = da . kernel^T (assigned), dkernel += x^T . da, dbias += column sums of da, where da = dy * act'.
template <typename Scalar, DenseActivation Act>
void dense_backward(Scalar* dx /* [M, F] */, Scalar* dkernel /* [F, U] */, Scalar* dbias /* [U] */,
                    const Scalar* dy /* [M, U] */, const Scalar* y /* [M, U] */, const Scalar* x /* [M, F] */,
                    const Scalar* kernel /* [F, U] */, Index M, Index F, Index U) {
  constexpr bool linear = Act == DenseActivation::Linear;
  Workspace<Scalar> da_buffer(linear ? 0 : M * U);  // [M, U] gradient on the pre-activations; linear: dy itself
  const Scalar* da = linear ? dy : da_buffer.data();
  if constexpr (!linear)
    for_each_row(M, kPointwiseCost * double(U), [&](Index row) {
      through_activation_row<Scalar, Act>(da_buffer.data() + row * U, dy + row * U, y + row * U, U);
    });
  rows_times_weight(dx, F, da, U, M, U, kernel, U, F, true, nullptr, false);
  transposed_times(dkernel, U, x, F, F, da, U, U, M, /*accumulate=*/true);
  column_sums(dbias, da, U, M, U, /*accumulate=*/true);
}

}  // namespace rnnext

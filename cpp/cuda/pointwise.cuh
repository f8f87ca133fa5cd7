// Device helpers shared by the cells' kernels: activations written like the CPU engine's (derivatives on the
// activation's output), the masking rule, launch sizes, and the pieces of a backward step that every cell shares.
#pragma once

#include <cuda_runtime.h>

#include <type_traits>

#include "cuda/device.h"

namespace rnnext::cuda {

template <typename Scalar>
__device__ inline Scalar sigmoid(Scalar v) {
  if constexpr (std::is_same_v<Scalar, float>) {
    return 1.0f / (1.0f + expf(-v));
  } else {
    return 1.0 / (1.0 + ::exp(-v));
  }
}

template <typename Scalar>
__device__ inline Scalar tanh_of(Scalar v) {
  if constexpr (std::is_same_v<Scalar, float>) {
    return tanhf(v);
  } else {
    return ::tanh(v);
  }
}

__device__ inline bool step_valid(const int64_t* lengths, int64_t t, int64_t n) {
  return lengths == nullptr || t < lengths[n];
}

// The gradient on h[t+1] that step t receives: what the step above kept (its direct path, or all of it where
// that step was masked) plus dz[t+1] . U^T where step t+1 of the row was valid. dh_rec is that product.
__device__ inline bool has_recurrent_gradient(const int64_t* lengths, int64_t t, int64_t T, int64_t n) {
  return t + 1 < T && step_valid(lengths, t + 1, n);
}

constexpr int kThreads = 256;

// One thread per element of an [N, H] step, grid-stride over `count`.
inline unsigned blocks_for(int64_t count) {
  const int64_t blocks = (count + kThreads - 1) / kThreads;
  return unsigned(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

#define RNNEXT_GRID_STRIDE(index, count)                                                          \
  for (int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; index < (count); \
       index += int64_t(gridDim.x) * blockDim.x)

// Launches `kernel` with one thread per element of `count` (its grid-stride loop covers them all) and checks the
// launch, naming the kernel. The host emulation (cpp/cuda/emulation/) calls it as a function: its one "thread"
// runs the whole loop, which is the same computation, since every kernel here reads and writes only its own
// element's entries.
template <typename... Params, typename... Args>
void launch(const char* name, int64_t count, void (*kernel)(Params...), Args... args) {
#ifdef RNNEXT_CUDA_EMULATION
  (void)count;
  kernel(Params(args)...);
#else
  kernel<<<blocks_for(count), kThreads>>>(Params(args)...);
#endif
  check_launch(name);
}

// out [rows, cols] = a * b elementwise, a and b with row strides lda and ldb (peephole gradients).
template <typename Scalar>
__global__ void multiply_rows(Scalar* out, const Scalar* a, int64_t lda, const Scalar* b, int64_t ldb, int64_t rows,
                              int64_t cols) {
  RNNEXT_GRID_STRIDE(index, rows * cols) {
    const int64_t r = index / cols, j = index % cols;
    out[index] = a[r * lda + j] * b[r * ldb + j];
  }
}

// dh0 [N, H] from the last backward step (t = 0), by the rule of has_recurrent_gradient.
template <typename Scalar>
__global__ void finish_state_gradient(Scalar* dh0, const Scalar* dh_rec, const int64_t* lengths, int64_t N,
                                      int64_t H) {
  RNNEXT_GRID_STRIDE(index, N * H) {
    if (step_valid(lengths, 0, index / H)) dh0[index] += dh_rec[index];
  }
}

template <typename Scalar>
__global__ void fill(Scalar* out, Scalar value, int64_t count) {
  RNNEXT_GRID_STRIDE(index, count) { out[index] = value; }
}

template <typename Scalar>
DeviceBuffer<Scalar> ones(int64_t count) {
  DeviceBuffer<Scalar> out(count);
  launch("fill", count, fill<Scalar>, out.data(), Scalar(1), count);
  return out;
}

// The products every backward pass ends with, for cells whose gate gradients dz [T*N, G*H] meet x and h[t] in the
// same columns (RNN, LSTM): dx = dz . kernel^T, dkernel = x^T . dz, drecurrent = h[0..T-1]^T . dz, dbias = sums.
template <typename Scalar>
void weight_gradients(Grads<Scalar>& grads, const Scalar* dz, const Scalar* x, const Scalar* kernel,
                      const Scalar* h, int64_t rows, int64_t I, int64_t H, int64_t GH) {
  gemm<Scalar>(false, true, rows, I, GH, 1, dz, GH, kernel, GH, 0, grads.x.data(), I);
  gemm<Scalar>(true, false, I, GH, rows, 1, x, I, dz, GH, 0, grads.kernel.data(), GH);
  gemm<Scalar>(true, false, H, GH, rows, 1, h, H, dz, GH, 0, grads.recurrent_kernel.data(), GH);
  const DeviceBuffer<Scalar> all_ones = ones<Scalar>(rows);
  column_sums<Scalar>(grads.bias.data(), dz, GH, rows, GH, all_ones.data());
}

}  // namespace rnnext::cuda

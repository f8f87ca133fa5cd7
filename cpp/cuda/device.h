// Device memory, error checks and the cuBLAS products of the CUDA engine (rnnext._cuda). Plain C++ over the CUDA
// runtime and cuBLAS C APIs, so that both the kernels (*.cu, nvcc) and the bindings (bind_cuda.cpp, the host
// compiler) include it.
//
// Conventions are the CPU engine's (cpp/rnnext/common.h): T steps, N batch rows, I input size, H hidden size,
// G gate blocks; row-major, time-major buffers; kernel [I, G*H], recurrent_kernel [H, G*H]; h [T+1, N, H] with
// slot 0 = h0. cuBLAS is column-major: a row-major [r, c] matrix is its column-major transpose, so every product
// below is written in row-major terms and swapped once, in gemm().
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

namespace rnnext::cuda {

struct Dims {
  int64_t T = 0, N = 0, I = 0, H = 0;
};

// Every CUDA and cuBLAS call goes through these: a failure throws naming the call (pybind11 turns it into a
// RuntimeError).
inline void check(cudaError_t status, const char* call) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error in ") + call + ": " + cudaGetErrorName(status) + " (" +
                             cudaGetErrorString(status) + ")");
}
inline void check(cublasStatus_t status, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuBLAS error in ") + call + ": " + cublasGetStatusName(status) + " (" +
                             cublasGetStatusString(status) + ")");
}
#define RNNEXT_CUDA_CHECK(call) ::rnnext::cuda::check((call), #call)

// The launch of a kernel, checked right away (a bad configuration) and named.
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

// An owned device array of `size` elements; moves, never copies.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(int64_t size) : size_(size) {
    if (size > 0) RNNEXT_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&data_), size_t(size) * sizeof(T)));
  }
  DeviceBuffer(const T* host, int64_t size) : DeviceBuffer(size) { upload(host, size); }
  DeviceBuffer(DeviceBuffer&& other) noexcept { swap(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    swap(other);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (data_ != nullptr) cudaFree(data_);  // no throwing from a destructor; a failed free leaks at worst
  }

  T* data() const { return data_; }
  int64_t size() const { return size_; }

  void upload(const T* host, int64_t count, int64_t offset = 0) {
    if (count > 0)
      RNNEXT_CUDA_CHECK(cudaMemcpy(data_ + offset, host, size_t(count) * sizeof(T), cudaMemcpyHostToDevice));
  }
  void download(T* host, int64_t count, int64_t offset = 0) const {
    if (count > 0)
      RNNEXT_CUDA_CHECK(cudaMemcpy(host, data_ + offset, size_t(count) * sizeof(T), cudaMemcpyDeviceToHost));
  }
  void zero() {
    if (size_ > 0) RNNEXT_CUDA_CHECK(cudaMemset(data_, 0, size_t(size_) * sizeof(T)));
  }

 private:
  void swap(DeviceBuffer& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
  }
  T* data_ = nullptr;
  int64_t size_ = 0;
};

// The process's cuBLAS handle on the default stream, created at first use. The default math mode, set explicitly:
// float32 products stay float32 (TF32 tensor cores need CUBLAS_TF32_TENSOR_OP_MATH, or NVIDIA_TF32_OVERRIDE=1 in
// the environment, which would break the tests' 1e-5); cuBLAS documents its pedantic mode as possibly slower.
inline cublasHandle_t blas_handle() {
  static cublasHandle_t handle = [] {
    cublasHandle_t made = nullptr;
    RNNEXT_CUDA_CHECK(cublasCreate(&made));
    RNNEXT_CUDA_CHECK(cublasSetMathMode(made, CUBLAS_DEFAULT_MATH));
    return made;
  }();
  return handle;
}

// Row-major C [M, Ncols] = alpha * op(A) . op(B) + beta * C, with op(A) [M, K] and op(B) [K, Ncols]; A is stored
// [M, K] (or [K, M] when trans_a) with row stride lda, likewise B, and C has row stride ldc.
template <typename Scalar>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t Ncols, int64_t K, Scalar alpha, const Scalar* A,
          int64_t lda, const Scalar* B, int64_t ldb, Scalar beta, Scalar* C, int64_t ldc) {
  if (M == 0 || Ncols == 0) return;
  // Column-major C^T = op(B)^T . op(A)^T: B first, and each stored row-major matrix is already its transpose.
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  // K = 0 (no inputs, I = 0) makes C = beta * C, and cuBLAS wants every leading dimension >= 1 even then.
  lda = std::max<int64_t>(lda, 1), ldb = std::max<int64_t>(ldb, 1), ldc = std::max<int64_t>(ldc, 1);
  if constexpr (std::is_same_v<Scalar, float>) {
    RNNEXT_CUDA_CHECK(cublasSgemm(blas_handle(), op_b, op_a, int(Ncols), int(M), int(K), &alpha, B, int(ldb), A,
                                  int(lda), &beta, C, int(ldc)));
  } else {
    RNNEXT_CUDA_CHECK(cublasDgemm(blas_handle(), op_b, op_a, int(Ncols), int(M), int(K), &alpha, B, int(ldb), A,
                                  int(lda), &beta, C, int(ldc)));
  }
}

// out [cols] = the column sums of the row-major A [rows, cols] (row stride lda), as one GEMV with a ones vector
// [rows]: deterministic, unlike atomics.
template <typename Scalar>
void column_sums(Scalar* out, const Scalar* A, int64_t lda, int64_t rows, int64_t cols, const Scalar* ones) {
  const Scalar one = 1, zero = 0;
  if (cols == 0) return;
  if constexpr (std::is_same_v<Scalar, float>) {
    RNNEXT_CUDA_CHECK(cublasSgemv(blas_handle(), CUBLAS_OP_N, int(cols), int(rows), &one, A, int(lda), ones, 1,
                                  &zero, out, 1));
  } else {
    RNNEXT_CUDA_CHECK(cublasDgemv(blas_handle(), CUBLAS_OP_N, int(cols), int(rows), &one, A, int(lda), ones, 1,
                                  &zero, out, 1));
  }
}

}  // namespace rnnext::cuda

// A host emulation of the few CUDA runtime and cuBLAS calls the CUDA engine makes, for testing its logic on a
// machine without a GPU (CMake option RNNEXT_CUDA_EMULATION; never part of a real build). It stands in for
// <cuda_runtime.h>, <cuda_runtime_api.h> and <cublas_v2.h>: kernels become host functions that one "thread" runs
// over the whole grid-stride loop (cpp/cuda/pointwise.cuh, launch), "device" memory is host memory that the
// emulation keeps track of, and GEMM and GEMV follow the BLAS definitions, column-major.
// It checks what a GPU would not report as clearly: every pointer given to a copy, a fill or a product must lie in
// an emulated device allocation with the whole range it touches, and the leading dimensions must be valid.
#pragma once

#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>

#define __global__
#define __device__
#define __host__
#define CUDART_VERSION 13000

struct rnnext_emulated_dim3 {
  unsigned x, y, z;
};
inline constexpr rnnext_emulated_dim3 threadIdx{0, 0, 0}, blockIdx{0, 0, 0}, blockDim{1, 1, 1}, gridDim{1, 1, 1};

// ---------------------------------------------------------------------------------------------------------
// runtime
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 };
struct cudaDeviceProp {
  char name[256];
  int major, minor;
};

namespace rnnext_emulation {

// Emulated device allocations: start address -> size in bytes.
inline std::map<std::uintptr_t, std::size_t> allocations;
inline std::mutex allocations_mutex;

// Whether [p, p + bytes) lies inside one emulated device allocation.
inline bool on_device(const void* p, std::size_t bytes) {
  std::lock_guard<std::mutex> lock(allocations_mutex);
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  auto it = allocations.upper_bound(address);
  if (it == allocations.begin()) return false;
  --it;
  return address + bytes <= it->first + it->second;
}

}  // namespace rnnext_emulation

inline const char* cudaGetErrorName(cudaError_t e) {
  return e == cudaSuccess ? "cudaSuccess" : e == cudaErrorInvalidValue ? "cudaErrorInvalidValue" : "cudaErrorMemoryAllocation";
}
inline const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : e == cudaErrorInvalidValue ? "invalid argument (host emulation)" : "out of memory";
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
inline cudaError_t cudaDriverGetVersion(int* version) {
  *version = CUDART_VERSION;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* props, int device) {
  if (device != 0) return cudaErrorInvalidValue;
  std::strcpy(props->name, "rnnext host emulation (no GPU)");
  props->major = props->minor = 0;
  return cudaSuccess;
}
inline cudaError_t cudaMalloc(void** p, std::size_t bytes) {
  *p = std::malloc(bytes);
  if (*p == nullptr) return cudaErrorMemoryAllocation;
  std::memset(*p, 0xff, bytes);  // NaN-filled, as uninitialised memory may be: reading it before writing shows
  std::lock_guard<std::mutex> lock(rnnext_emulation::allocations_mutex);
  rnnext_emulation::allocations[reinterpret_cast<std::uintptr_t>(*p)] = bytes;
  return cudaSuccess;
}
inline cudaError_t cudaFree(void* p) {
  std::lock_guard<std::mutex> lock(rnnext_emulation::allocations_mutex);
  if (rnnext_emulation::allocations.erase(reinterpret_cast<std::uintptr_t>(p)) == 0) return cudaErrorInvalidValue;
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) {
  using rnnext_emulation::on_device;
  const bool ok = kind == cudaMemcpyHostToDevice   ? on_device(dst, bytes) && !on_device(src, 1)
                  : kind == cudaMemcpyDeviceToHost ? on_device(src, bytes) && !on_device(dst, 1)
                                                   : on_device(src, bytes) && on_device(dst, bytes);
  if (!ok) return cudaErrorInvalidValue;
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemset(void* p, int value, std::size_t bytes) {
  if (!rnnext_emulation::on_device(p, bytes)) return cudaErrorInvalidValue;
  std::memset(p, value, bytes);
  return cudaSuccess;
}

// ---------------------------------------------------------------------------------------------------------
// cuBLAS
#define CUBLAS_VER_MAJOR 13
#define CUBLAS_VER_MINOR 0
#define CUBLAS_VER_PATCH 0
enum cublasStatus_t { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_INVALID_VALUE = 7 };
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cublasMath_t { CUBLAS_DEFAULT_MATH = 0 };
using cublasHandle_t = struct rnnext_emulated_cublas*;

inline const char* cublasGetStatusName(cublasStatus_t s) {
  return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS_INVALID_VALUE";
}
inline const char* cublasGetStatusString(cublasStatus_t s) {
  return s == CUBLAS_STATUS_SUCCESS ? "success" : "an invalid value was used as an argument (host emulation)";
}
inline cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  *handle = nullptr;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }

namespace rnnext_emulation {

// Whether a column-major matrix of `rows` x `cols` with leading dimension ld, at p, is valid and on the device.
template <typename Scalar>
bool matrix_ok(const Scalar* p, int rows, int cols, int ld) {
  if (rows < 0 || cols < 0 || ld < (rows > 1 ? rows : 1)) return false;
  if (rows == 0 || cols == 0) return true;
  return on_device(p, (std::size_t(cols - 1) * ld + rows) * sizeof(Scalar));
}

// C = alpha op(A) op(B) + beta C, column-major, C [m, n]; with beta = 0, C is not read (BLAS).
template <typename Scalar>
cublasStatus_t gemm(cublasOperation_t op_a, cublasOperation_t op_b, int m, int n, int k, const Scalar* alpha,
                    const Scalar* A, int lda, const Scalar* B, int ldb, const Scalar* beta, Scalar* C, int ldc) {
  const bool ta = op_a == CUBLAS_OP_T, tb = op_b == CUBLAS_OP_T;
  if (m < 0 || n < 0 || k < 0 || !matrix_ok(C, m, n, ldc) || !matrix_ok(A, ta ? k : m, ta ? m : k, lda) ||
      !matrix_ok(B, tb ? n : k, tb ? k : n, ldb))
    return CUBLAS_STATUS_INVALID_VALUE;
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      Scalar sum = 0;
      for (int l = 0; l < k; ++l)
        sum += (ta ? A[l + std::size_t(i) * lda] : A[i + std::size_t(l) * lda]) *
               (tb ? B[j + std::size_t(l) * ldb] : B[l + std::size_t(j) * ldb]);
      Scalar& c = C[i + std::size_t(j) * ldc];
      c = *beta == Scalar(0) ? *alpha * sum : *alpha * sum + *beta * c;
    }
  return CUBLAS_STATUS_SUCCESS;
}

// y = alpha A x + beta y (op N only, unit strides), column-major A [m, n].
template <typename Scalar>
cublasStatus_t gemv(cublasOperation_t op, int m, int n, const Scalar* alpha, const Scalar* A, int lda,
                    const Scalar* x, int incx, const Scalar* beta, Scalar* y, int incy) {
  if (op != CUBLAS_OP_N || incx != 1 || incy != 1 || !matrix_ok(A, m, n, lda) || !matrix_ok(x, n, 1, n) ||
      !matrix_ok(y, m, 1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  for (int i = 0; i < m; ++i) {
    Scalar sum = 0;
    for (int l = 0; l < n; ++l) sum += A[i + std::size_t(l) * lda] * x[l];
    y[i] = *beta == Scalar(0) ? *alpha * sum : *alpha * sum + *beta * y[i];
  }
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace rnnext_emulation

inline cublasStatus_t cublasSgemm(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                  const float* alpha, const float* A, int lda, const float* B, int ldb,
                                  const float* beta, float* C, int ldc) {
  return rnnext_emulation::gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline cublasStatus_t cublasDgemm(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                  const double* alpha, const double* A, int lda, const double* B, int ldb,
                                  const double* beta, double* C, int ldc) {
  return rnnext_emulation::gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline cublasStatus_t cublasSgemv(cublasHandle_t, cublasOperation_t op, int m, int n, const float* alpha,
                                  const float* A, int lda, const float* x, int incx, const float* beta, float* y,
                                  int incy) {
  return rnnext_emulation::gemv(op, m, n, alpha, A, lda, x, incx, beta, y, incy);
}
inline cublasStatus_t cublasDgemv(cublasHandle_t, cublasOperation_t op, int m, int n, const double* alpha,
                                  const double* A, int lda, const double* x, int incx, const double* beta, double* y,
                                  int incy) {
  return rnnext_emulation::gemv(op, m, n, alpha, A, lda, x, incx, beta, y, incy);
}

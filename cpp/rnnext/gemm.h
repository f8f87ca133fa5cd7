// The small GEMMs inside the time loop, C += A . B, built from Eigen's own packing routines and GEBP
// micro-kernel (Eigen/src/Core/products/GeneralBlockPanelKernel.h) so that:
//   - the weight operand A is packed once per call, not once per time step (Eigen's products repack both
//     operands on every call, which costs as much as the arithmetic at small batch sizes);
//   - the step operand B (the states h[t] or the gate gradients dz[t]) is packed once per step and shared by
//     all threads, each thread packing a share of its columns;
//   - every unit block is one fixed-size kernel call, so results do not depend on the number of threads;
//   - a single sequence (N = 1) uses Eigen's GEMV on plain copies instead: GEBP's one-column path keeps only
//     two accumulators busy and is bound by FMA latency.
// Shapes are column-major views of the engine's row-major buffers: a row-major [N, X] buffer is a
// column-major [X, N] matrix, so C^T = A . B^T computes a row-major C = B . A^T with N as the column count.
#pragma once

#include <Eigen/Core>

#include "rnnext/common.h"

namespace rnnext {

namespace gemm_detail {
namespace ei = Eigen::internal;
template <typename Scalar>
using Traits = ei::gebp_traits<Scalar, Scalar>;
template <typename Scalar, int Order>
using ConstMapper = ei::const_blas_data_mapper<Scalar, Index, Order>;
template <typename Scalar>
using ResultMapper = ei::blas_data_mapper<Scalar, Index, Eigen::ColMajor>;
template <typename Scalar>
using AlignedVector = std::vector<Scalar, Eigen::aligned_allocator<Scalar>>;

// Chunk sizes rounded up to whole 64-byte lines, so every packed chunk starts aligned (GEBP loads A aligned).
template <typename Scalar>
Index aligned_size(Index n) {
  const Index per_line = Index(64 / sizeof(Scalar));
  return (n + per_line - 1) / per_line * per_line;
}
}  // namespace gemm_detail

// The depth chunking shared by one product's packed operands (Eigen's own choice for these sizes).
struct GemmDepth {
  Index depth, chunk;
  Index chunks() const { return (depth + chunk - 1) / chunk; }
  Index begin(Index c) const { return c * chunk; }
  Index size(Index c) const { return std::min(chunk, depth - c * chunk); }
};

template <typename Scalar>
GemmDepth gemm_depth(Index depth, Index rows, Index cols) {
  Index kc = depth, mc = rows, nc = cols;
  Eigen::internal::computeProductBlockingSizes<Scalar, Scalar>(kc, mc, nc, Index(1));
  return {depth, std::max<Index>(kc, 1)};
}

// A [rows, depth] packed per depth chunk. `Order` says how the source is stored: element (i, k) is
// a[i + k * stride] for ColMajor and a[i * stride + k] for RowMajor. For a single sequence (vector = true,
// the products are matrix-vector) A is kept as one plain column-major copy for Eigen's GEMV instead.
template <typename Scalar>
class PackedLhs {
 public:
  template <int Order>
  void pack(const Scalar* a, Index stride, Index rows, const GemmDepth& depth, bool vector) {
    using namespace gemm_detail;
    rows_ = rows;
    vector_ = vector;
    ConstMapper<Scalar, Order> source(a, stride);
    if (vector) {
      data_.resize(size_t(rows * depth.depth));
      for (Index k = 0; k < depth.depth; ++k)
        for (Index i = 0; i < rows; ++i) data_[size_t(i + k * rows)] = source(i, k);
      return;
    }
    ei::gemm_pack_lhs<Scalar, Index, ConstMapper<Scalar, Order>, Traits<Scalar>::mr, Traits<Scalar>::LhsProgress,
                      typename Traits<Scalar>::LhsPacket4Packing, Order>
        pack_lhs;
    chunk_stride_ = aligned_size<Scalar>(rows * depth.chunk);
    data_.resize(size_t(chunk_stride_ * depth.chunks()));
    for (Index c = 0; c < depth.chunks(); ++c)
      pack_lhs(data_.data() + c * chunk_stride_, source.getSubMapper(0, depth.begin(c)), depth.size(c), rows);
  }
  Index rows() const { return rows_; }
  bool vector() const { return vector_; }
  const Scalar* chunk(Index c) const { return data_.data() + c * chunk_stride_; }
  const Scalar* plain() const { return data_.data(); }

 private:
  Index rows_ = 0, chunk_stride_ = 0;
  bool vector_ = false;
  gemm_detail::AlignedVector<Scalar> data_;
};

// B [depth, cols], column-major with a stride (a row-major [cols, depth] step buffer), packed per depth
// chunk. Threads pack disjoint column shares; a barrier must separate packing from use. With one column it is
// a plain copy of the vector, and multiply_add is Eigen's GEMV.
template <typename Scalar>
class PackedRhs {
 public:
  PackedRhs(const GemmDepth& depth, Index cols) : depth_(depth), cols_(cols) {
    chunk_stride_ = gemm_detail::aligned_size<Scalar>(depth.chunk * cols);
    data_.resize(size_t(chunk_stride_ * depth.chunks()));
  }

  // Packs the columns of share `share` out of `shares` (whole nr-panels each, the last share takes the rest).
  void pack_share(const Scalar* b, Index stride, Index share, Index shares) {
    using namespace gemm_detail;
    if (cols_ == 1) {
      if (share == 0) std::copy_n(b, depth_.depth, data_.data());
      return;
    }
    constexpr Index nr = Traits<Scalar>::nr;
    const Index panels = (cols_ + nr - 1) / nr;
    const Index first = panels * share / shares * nr, last = std::min(cols_, panels * (share + 1) / shares * nr);
    if (first >= last) return;
    ei::gemm_pack_rhs<Scalar, Index, ConstMapper<Scalar, Eigen::ColMajor>, nr, Eigen::ColMajor> pack_rhs;
    ConstMapper<Scalar, Eigen::ColMajor> source(b, stride);
    for (Index c = 0; c < depth_.chunks(); ++c)
      pack_rhs(data_.data() + c * chunk_stride_ + first * depth_.size(c), source.getSubMapper(depth_.begin(c), first),
               depth_.size(c), last - first);
  }

  // C [rows, cols] (column-major, element (i, j) at c[i + j * stride]) += A . B
  void multiply_add(Scalar* c, Index stride, const PackedLhs<Scalar>& a) const {
    using namespace gemm_detail;
    if (cols_ == 1) {
      using ColumnMajor = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
      using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
      Eigen::Map<Vector>(c, a.rows()).noalias() +=
          Eigen::Map<const ColumnMajor>(a.plain(), a.rows(), depth_.depth) * Eigen::Map<const Vector>(data_.data(), depth_.depth);
      return;
    }
    ei::gebp_kernel<Scalar, Scalar, Index, ResultMapper<Scalar>, Traits<Scalar>::mr, Traits<Scalar>::nr, false, false>
        gebp;
    ResultMapper<Scalar> result(c, stride);
    for (Index k = 0; k < depth_.chunks(); ++k)
      gebp(result, a.chunk(k), data_.data() + k * chunk_stride_, a.rows(), depth_.size(k), cols_, Scalar(1));
  }

 private:
  GemmDepth depth_;
  Index cols_, chunk_stride_;
  gemm_detail::AlignedVector<Scalar> data_;
};

// Thread id and count inside a parallel region (0 and 1 outside one or without OpenMP).
inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}
inline int thread_count() {
#ifdef _OPENMP
  return omp_get_num_threads();
#else
  return 1;
#endif
}

}  // namespace rnnext

namespace rnnext {

// Forward operands: for each unit block b and gate k, the gate's columns of recurrent_kernel [H, G*H] for the
// block's units, as A [size, H] (the transposed columns). Index b * G + k.
template <typename Scalar>
std::vector<PackedLhs<Scalar>> pack_gate_columns(const Scalar* recurrent_kernel, Index H, Index G,
                                                 const std::vector<UnitBlock>& blocks, const GemmDepth& depth,
                                                 Index N) {
  std::vector<PackedLhs<Scalar>> packed(blocks.size() * size_t(G));
  for (size_t b = 0; b < blocks.size(); ++b)
    for (Index k = 0; k < G; ++k)
      packed[b * size_t(G) + size_t(k)].template pack<Eigen::ColMajor>(
          recurrent_kernel + k * H + blocks[b].begin, G * H, blocks[b].size, depth, N == 1);
  return packed;
}

// Backward operands: for each unit block, the block's rows of recurrent_kernel [H, G*H] restricted to the
// columns [first_column, first_column + depth), as A [size, depth].
template <typename Scalar>
std::vector<PackedLhs<Scalar>> pack_unit_rows(const Scalar* recurrent_kernel, Index GH, Index first_column,
                                              const std::vector<UnitBlock>& blocks, const GemmDepth& depth, Index N) {
  std::vector<PackedLhs<Scalar>> packed(blocks.size());
  for (size_t b = 0; b < blocks.size(); ++b)
    packed[b].template pack<Eigen::RowMajor>(recurrent_kernel + blocks[b].begin * GH + first_column, GH,
                                             blocks[b].size, depth, N == 1);
  return packed;
}

}  // namespace rnnext

// The GEMMs of the engine, C += A . B on operands packed once and reused:
//   - inside the time loop, the weight operand A is packed once per call, not once per time step (a library
//     GEMM repacks both operands on every call, which costs as much as the arithmetic at small batch sizes);
//     the step operand B (the states h[t] or the gate gradients dz[t]) is packed once per step and shared by
//     all threads, each thread packing a share of its columns;
//   - every unit block is one fixed-size product, so results do not depend on the number of threads;
//   - a single sequence (N = 1) uses Eigen's GEMV on plain copies instead: a one-column GEMM keeps too few
//     accumulators busy and is bound by FMA latency;
//   - the large products before and after the time loop (end of this file) use the same packed operands.
// The arithmetic is rnnext's own micro-kernel for float where the build's instruction set has one
// (kernel_avx512.h, kernel_avx2.h; chosen once, in OwnKernel below), and Eigen's packing routines and GEBP
// micro-kernel (Eigen/src/Core/products/GeneralBlockPanelKernel.h) otherwise.
// Shapes are column-major views of the engine's row-major buffers: a row-major [N, X] buffer is a
// column-major [X, N] matrix, so C^T = A . B^T computes a row-major C = B . A^T with N as the column count.
#pragma once

#include <Eigen/Core>

#include "rnnext/common.h"
#include "rnnext/kernel_avx2.h"
#include "rnnext/kernel_avx512.h"
#include "rnnext/thread_tuner.h"

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

// The micro-kernel of each scalar type, the one place where the instruction set picks it: rnnext's own (a struct
// of constants and static functions with the interface of avx2::FloatKernel) where the build targets one that has
// it, Eigen's GEBP otherwise. A build that compiles kernels per instruction set and picks one at run time would
// replace this selection, not the code that uses it.
template <typename Scalar>
struct OwnKernel {
  static constexpr bool available = false;
  static constexpr const char* name = "Eigen GEBP";
};
#if defined(RNNEXT_AVX512_KERNEL)
template <>
struct OwnKernel<float> : avx512::FloatKernel {
  static constexpr bool available = true;
};
#elif defined(RNNEXT_AVX2_KERNEL)
template <>
struct OwnKernel<float> : avx2::FloatKernel {
  static constexpr bool available = true;
};
#endif

// Whether the products of this scalar type run on rnnext's own micro-kernel.
template <typename Scalar>
constexpr bool own_kernel = OwnKernel<Scalar>::available;

// Packed row and column counts: whole panels of the kernel in use.
template <typename Scalar>
Index padded_rows(Index rows) {
  if constexpr (own_kernel<Scalar>) {
    constexpr Index mr = OwnKernel<Scalar>::kMr;
    return (rows + mr - 1) / mr * mr;
  }
  return rows;
}
template <typename Scalar>
constexpr Index panel_columns() {
  if constexpr (own_kernel<Scalar>) return OwnKernel<Scalar>::kNr;
  return Traits<Scalar>::nr;
}

// Chunk sizes rounded up to whole 64-byte lines, so every packed chunk starts aligned (GEBP loads A aligned).
template <typename Scalar>
Index aligned_size(Index n) {
  const Index per_line = Index(64 / sizeof(Scalar));
  return (n + per_line - 1) / per_line * per_line;
}
}  // namespace gemm_detail

// Row ranges that split one packed A among threads start at multiples of this: a multiple of the panel height
// of every kernel (rnnext's 16 and 32, Eigen's 3 packets: 6 to 48), so each range is a whole run of panels.
constexpr Index kRowSplit = 192;

// The depth chunking shared by one product's packed operands (Eigen's own choice for these sizes).
struct GemmDepth {
  Index depth, chunk;
  Index chunks() const { return (depth + chunk - 1) / chunk; }
  Index begin(Index c) const { return c * chunk; }
  Index size(Index c) const { return std::min(chunk, depth - c * chunk); }
};

template <typename Scalar>
GemmDepth gemm_depth(Index depth, Index rows, Index cols) {
  if constexpr (gemm_detail::own_kernel<Scalar>) {
    // Chunks of at most kMaxDepth, as even as possible: a panel of B then stays in L1.
    constexpr Index max_depth = gemm_detail::OwnKernel<Scalar>::kMaxDepth;
    const Index chunks = std::max<Index>(1, (depth + max_depth - 1) / max_depth);
    return {depth, std::max<Index>((depth + chunks - 1) / chunks, 1)};
  }
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
    if (vector) {
      rows_ = rows;
      gemm_detail::ConstMapper<Scalar, Order> source(a, stride);
      data_.resize(size_t(rows * depth.depth));
      // In square tiles: from a row-major source (the backward pass's unit rows) this is a transposition, and
      // element by element along k it touched a new cache line for every read (about 20x slower than the tiles
      // for H = 512, a quarter of an N = 1 LSTM backward pass). Copies only: the same values, the same results.
      constexpr Index kTile = 16;
      for (Index k0 = 0; k0 < depth.depth; k0 += kTile)
        for (Index i0 = 0; i0 < rows; i0 += kTile)
          for (Index k = k0; k < std::min(depth.depth, k0 + kTile); ++k)
            for (Index i = i0; i < std::min(rows, i0 + kTile); ++i) data_[size_t(i + k * rows)] = source(i, k);
      return;
    }
    allocate(rows, depth);
    pack_rows<Order>(a, stride, 0, rows);
  }

  // Packing in parallel: allocate once, then threads pack disjoint row ranges that start at multiples of
  // kRowSplit (a multiple of every kernel's panel height, so each range is a whole run of panels).
  void allocate(Index rows, const GemmDepth& depth) {
    rows_ = rows;
    depth_ = depth;
    chunk_stride_ = gemm_detail::aligned_size<Scalar>(gemm_detail::padded_rows<Scalar>(rows) * depth.chunk);
    data_.resize(size_t(chunk_stride_ * depth.chunks()));
  }
  template <int Order>
  void pack_rows(const Scalar* a, Index stride, Index first, Index last) {
    using namespace gemm_detail;
    ConstMapper<Scalar, Order> source(a, stride);
    for (Index c = 0; c < depth_.chunks(); ++c) {
      Scalar* out = data_.data() + c * chunk_stride_ + first * depth_.size(c);
      const Index k0 = depth_.begin(c);
      if constexpr (own_kernel<Scalar>) {
        if constexpr (Order == Eigen::ColMajor) {
          OwnKernel<Scalar>::pack_a_columns(out, last - first, depth_.size(c), a + first + k0 * stride, stride);
        } else {
          OwnKernel<Scalar>::pack_a_rows(out, last - first, depth_.size(c), a + first * stride + k0, stride);
        }
        continue;
      }
      ei::gemm_pack_lhs<Scalar, Index, ConstMapper<Scalar, Order>, Traits<Scalar>::mr, Traits<Scalar>::LhsProgress,
                        typename Traits<Scalar>::LhsPacket4Packing, Order>
          pack_lhs;
      pack_lhs(out, source.getSubMapper(first, k0), depth_.size(c), last - first);
    }
  }

  Index rows() const { return rows_; }
  const Scalar* chunk(Index c) const { return data_.data() + c * chunk_stride_; }
  const Scalar* plain() const { return data_.data(); }

 private:
  GemmDepth depth_{};
  Index rows_ = 0, chunk_stride_ = 0;
  gemm_detail::AlignedVector<Scalar> data_;
};

// B [depth, cols] packed per depth chunk. `Order` says how the source is stored: element (k, j) is
// b[k + j * stride] for ColMajor (a row-major [cols, depth] step buffer) and b[k * stride + j] for RowMajor.
// Threads pack disjoint column shares; a barrier must separate packing from use. In vector mode (one column,
// to be multiplied by a vector-mode PackedLhs) it is a plain copy of the column and multiply_add is Eigen's GEMV.
template <typename Scalar>
class PackedRhs {
 public:
  PackedRhs(const GemmDepth& depth, Index cols, bool vector) { reshape(depth, cols, vector); }

  // Sets the shape for the next packing, reusing the buffer.
  void reshape(const GemmDepth& depth, Index cols, bool vector) {
    constexpr Index nr = gemm_detail::panel_columns<Scalar>();
    depth_ = depth;
    cols_ = cols;
    vector_ = vector;
    chunk_stride_ = gemm_detail::aligned_size<Scalar>(depth.chunk * ((cols + nr - 1) / nr * nr));
    data_.resize(size_t(chunk_stride_ * depth.chunks()));
  }

  // Packs the columns of share `share` out of `shares` (whole nr-panels each, the last share takes the rest).
  template <int Order = Eigen::ColMajor>
  void pack_share(const Scalar* b, Index stride, Index share, Index shares) {
    using namespace gemm_detail;
    if (vector_) {
      if (share == 0) std::copy_n(b, depth_.depth, data_.data());
      return;
    }
    constexpr Index nr = panel_columns<Scalar>();
    const Index panels = (cols_ + nr - 1) / nr;
    const Index first = panels * share / shares * nr, last = std::min(cols_, panels * (share + 1) / shares * nr);
    if (first >= last) return;
    ConstMapper<Scalar, Order> source(b, stride);
    for (Index c = 0; c < depth_.chunks(); ++c) {
      Scalar* out = data_.data() + c * chunk_stride_;
      if constexpr (own_kernel<Scalar>) {
        const Index k0 = depth_.begin(c);
        if constexpr (Order == Eigen::ColMajor) {
          OwnKernel<Scalar>::pack_b_columns(out, first, last, depth_.size(c), b + k0, stride);
        } else {
          OwnKernel<Scalar>::pack_b(out, first, last, depth_.size(c),
                                    [&](Index k, Index j) { return source(k0 + k, j); });
        }
        continue;
      }
      ei::gemm_pack_rhs<Scalar, Index, ConstMapper<Scalar, Order>, nr, Order> pack_rhs;
      pack_rhs(out + first * depth_.size(c), source.getSubMapper(depth_.begin(c), first), depth_.size(c), last - first);
    }
  }

  // C [rows, cols] (column-major, element (i, j) at c[i + j * stride]) += A . B
  // Rows [first_row, last_row) of A only (a range that starts at a multiple of kRowSplit) with the defaults
  // below as the whole of A.
  void multiply_add(Scalar* c, Index stride, const PackedLhs<Scalar>& a) const { multiply_add(c, stride, a, 0, a.rows()); }
  void multiply_add(Scalar* c, Index stride, const PackedLhs<Scalar>& a, Index first_row, Index last_row) const {
    multiply(c, stride, a, first_row, last_row, false, nullptr);
  }

  // C = A . B + row_init (one value per row of A, for rows [first_row, last_row); zeros when null): C is
  // written, never read, which saves a pass over it when the product starts a buffer (an input projection).
  void multiply_set(Scalar* c, Index stride, const PackedLhs<Scalar>& a, Index first_row, Index last_row,
                    const Scalar* row_init) const {
    multiply(c, stride, a, first_row, last_row, true, row_init);
  }

 private:
  void multiply(Scalar* c, Index stride, const PackedLhs<Scalar>& a, Index first_row, Index last_row, bool set,
                const Scalar* row_init) const {
    using namespace gemm_detail;
    const Index rows = last_row - first_row;
    if (set && (!own_kernel<Scalar> || depth_.chunks() == 0 || vector_)) {
      // Eigen's kernel only accumulates: start C from row_init first.
      for (Index j = 0; j < cols_; ++j) {
        Scalar* column = c + first_row + j * stride;
        if (row_init != nullptr) {
          std::copy_n(row_init + first_row, rows, column);
        } else {
          std::fill_n(column, rows, Scalar(0));
        }
      }
      set = false;
    }
    if (vector_) {
      using ColumnMajor = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
      using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
      Eigen::Map<Vector>(c, a.rows()).noalias() +=
          Eigen::Map<const ColumnMajor>(a.plain(), a.rows(), depth_.depth) * Eigen::Map<const Vector>(data_.data(), depth_.depth);
      return;
    }
    if constexpr (own_kernel<Scalar>) {
      for (Index k = 0; k < depth_.chunks(); ++k)
        OwnKernel<Scalar>::multiply_add(c + first_row, stride, a.chunk(k) + first_row * depth_.size(k),
                                        data_.data() + k * chunk_stride_, rows, cols_, depth_.size(k), set && k == 0,
                                        row_init ? row_init + first_row : nullptr);
      return;
    }
    ei::gebp_kernel<Scalar, Scalar, Index, ResultMapper<Scalar>, Traits<Scalar>::mr, Traits<Scalar>::nr, false, false>
        gebp;
    ResultMapper<Scalar> result(c + first_row, stride);
    for (Index k = 0; k < depth_.chunks(); ++k)
      gebp(result, a.chunk(k) + first_row * depth_.size(k), data_.data() + k * chunk_stride_, rows, depth_.size(k),
           cols_, Scalar(1));
  }

  GemmDepth depth_{};
  Index cols_ = 0, chunk_stride_ = 0;
  bool vector_ = false;
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

// ---------------------------------------------------------------------------------------------------------
// The large products (see "The large products" in common.h), on the same packed operands and kernels as the
// time loop.

// out [rows, n] (+)= in [rows, k] . weight, where weight is [k, n], or [n, k] used transposed. Unless
// `accumulate`, out = in . weight + bias [n] (zeros when null), written without reading out. Strides are the
// row strides of the row-major buffers (so column blocks of wider buffers work too).
// Column-major, this is out^T [n, rows] += weight^T [n, k] . in^T [k, rows]: the weight is packed as A (once
// per call by rows_times_weight, once for many calls by PackedWeight), then each work item packs a chunk of
// kRowChunk rows as B and multiplies it.

namespace gemm_detail {
// The depth chunking of a product with `rows` input rows: it depends on the rows only below kRowChunk.
template <typename Scalar>
GemmDepth row_product_depth(Index k, Index n, Index rows) {
  return gemm_depth<Scalar>(k, n, std::min(rows, kRowChunk));
}

// The threads of the enclosing region (or the one caller) pack the weight in splits of kRowSplit output columns.
template <typename Scalar>
void pack_weight_splits(PackedLhs<Scalar>& weight_t, const Scalar* weight, Index weight_stride, Index n,
                        bool transpose_weight) {
  const Index splits = chunk_count(n, kRowSplit);
#pragma omp for schedule(static)
  for (Index split = 0; split < splits; ++split) {
    const Index first = split * kRowSplit, last = std::min(n, first + kRowSplit);
    if (transpose_weight) {
      weight_t.template pack_rows<Eigen::RowMajor>(weight, weight_stride, first, last);
    } else {
      weight_t.template pack_rows<Eigen::ColMajor>(weight, weight_stride, first, last);
    }
  }
}

// The products of rows_times_weight on a packed weight, shared by the threads of the enclosing region.
// A work item is a row chunk times all output columns, or, when there are too few row chunks to keep every
// thread busy (a single short sequence), times kRowSplit of them. How items are cut changes no result:
// every output element is the same kernel's sum over the same depth chunks.
template <typename Scalar>
void multiply_row_chunks(Scalar* out, Index out_stride, const Scalar* in, Index in_stride, Index rows, Index n,
                         const PackedLhs<Scalar>& weight_t, const GemmDepth& depth,
                         const typename Eigen::NumTraits<Scalar>::Real* bias, bool accumulate) {
  const Index chunks = chunk_count(rows, kRowChunk), splits = chunk_count(n, kRowSplit);
  const Index column_splits = chunks >= 2 * thread_count() ? 1 : splits;
  const Index item_columns = column_splits == 1 ? n : kRowSplit;
  PackedRhs<Scalar> chunk_t(depth, kRowChunk, false);
  Index packed_chunk = -1;
#pragma omp for schedule(dynamic)
  for (Index item = 0; item < chunks * column_splits; ++item) {
    const Index chunk = item / column_splits, first = chunk * kRowChunk, count = std::min(kRowChunk, rows - first);
    const Index first_column = item % column_splits * item_columns;
    const Index columns = std::min(n, first_column + item_columns) - first_column;
    if (chunk != packed_chunk) {
      chunk_t.reshape(depth, count, false);
      chunk_t.pack_share(in + first * in_stride, in_stride, 0, 1);
      packed_chunk = chunk;
    }
    if (accumulate) {
      chunk_t.multiply_add(out + first * out_stride, out_stride, weight_t, first_column, first_column + columns);
    } else {
      chunk_t.multiply_set(out + first * out_stride, out_stride, weight_t, first_column, first_column + columns, bias);
    }
  }
}

inline bool worth_threads(Index rows, Index k, Index n) {
  return 2.0 * double(rows) * double(k) * double(n) > kParallelWork;
}
}  // namespace gemm_detail

template <typename Scalar>
void rows_times_weight(Scalar* out, Index out_stride, const Scalar* in, Index in_stride, Index rows, Index k,
                       const Scalar* weight, Index weight_stride, Index n, bool transpose_weight,
                       const typename Eigen::NumTraits<Scalar>::Real* bias, bool accumulate) {
  using namespace gemm_detail;
  if (rows == 0 || n == 0) return;
  const GemmDepth depth = row_product_depth<Scalar>(k, n, rows);
  PackedLhs<Scalar> weight_t;
  weight_t.allocate(n, depth);
  const TimedRun timed(typeid(PackedLhs<Scalar>), k, n, rows, worth_threads(rows, k, n) ? max_threads() : 1);
#pragma omp parallel num_threads(timed.threads()) if (timed.threads() > 1)
  {
    pack_weight_splits(weight_t, weight, weight_stride, n, transpose_weight);
    multiply_row_chunks(out, out_stride, in, in_stride, rows, n, weight_t, depth, bias, accumulate);
  }
}

// A weight [k, n] packed once for many products with the same number of input rows (a layer stepped one time
// step at a time): rows_times_weight without the packing, and with the same results.
template <typename Scalar>
class PackedWeight {
 public:
  PackedWeight(const Scalar* weight, Index weight_stride, Index k, Index n, Index rows)
      : k_(k), n_(n), rows_(rows), depth_(gemm_detail::row_product_depth<Scalar>(k, n, rows)) {
    weight_t_.allocate(n, depth_);
    gemm_detail::pack_weight_splits(weight_t_, weight, weight_stride, n, false);
  }

  // out [rows, n] = in [rows, k] . weight + bias [n], for the `rows` given at construction.
  void multiply_set(Scalar* out, Index out_stride, const Scalar* in, Index in_stride, const Scalar* bias) const {
    if (rows_ == 0 || n_ == 0) return;
    const TimedRun timed(typeid(PackedWeight), k_, n_, rows_,
                         gemm_detail::worth_threads(rows_, k_, n_) ? max_threads() : 1);
#pragma omp parallel num_threads(timed.threads()) if (timed.threads() > 1)
    gemm_detail::multiply_row_chunks(out, out_stride, in, in_stride, rows_, n_, weight_t_, depth_, bias, false);
  }

 private:
  Index k_, n_, rows_;
  GemmDepth depth_;
  PackedLhs<Scalar> weight_t_;
};

// out [m, n] = a [rows, m]^T . b [rows, n]: a weight gradient summed over all T*N rows; with `accumulate`,
// out += ... instead (each depth chunk's product is added to what out holds).
// Column-major, this is out^T [n, m] = b^T [n, rows] . a [rows, m]. The depth (rows) is walked in chunks:
// all threads pack the chunk of a as B together, then each packs and multiplies its own kColumnChunk-column
// slices of b. Every element sums its depth chunks in the same order whatever the thread count.
template <typename Scalar>
void transposed_times(Scalar* out, Index out_stride, const Scalar* a, Index a_stride, Index m, const Scalar* b,
                      Index b_stride, Index n, Index rows, bool accumulate = false) {
  if (!accumulate)
    for (Index i = 0; i < m; ++i) std::fill_n(out + i * out_stride, n, Scalar(0));
  if (rows == 0 || n == 0 || m == 0) return;
  const GemmDepth depth = gemm_depth<Scalar>(rows, std::min(n, kColumnChunk), m);
  const Index chunks = chunk_count(n, kColumnChunk);
  // One column chunk leaves nothing to share but the packing, not worth a barrier per depth chunk.
  const bool parallel = chunks > 1 && 2.0 * double(rows) * double(m) * double(n) > kParallelWork;
  PackedRhs<Scalar> a_chunk(GemmDepth{depth.chunk, depth.chunk}, m, false);
  const TimedRun timed(typeid(PackedRhs<Scalar>), m, n, rows, parallel ? max_threads() : 1);
#pragma omp parallel num_threads(timed.threads()) if (timed.threads() > 1)
  {
    PackedLhs<Scalar> b_slice;
    for (Index c = 0; c < depth.chunks(); ++c) {
      const GemmDepth block{depth.size(c), depth.size(c)};
#pragma omp single
      a_chunk.reshape(block, m, false);
      a_chunk.template pack_share<Eigen::RowMajor>(a + depth.begin(c) * a_stride, a_stride, thread_id(), thread_count());
#pragma omp barrier
#pragma omp for schedule(dynamic)
      for (Index chunk = 0; chunk < chunks; ++chunk) {
        const Index first = chunk * kColumnChunk, count = std::min(kColumnChunk, n - first);
        b_slice.template pack<Eigen::ColMajor>(b + depth.begin(c) * b_stride + first, b_stride, count, block, false);
        a_chunk.multiply_add(out + first, out_stride, b_slice);
      }
    }
  }
}

// projection [rows, G*H] = inputs [rows, I] . kernel [I, G*H] + bias [G*H], the kernel packed for this call
// or, when `packed` is given, once for many calls.
template <typename Scalar>
void project_inputs(Scalar* projection, const Scalar* inputs, const Scalar* kernel, const Scalar* bias,
                    Index rows, Index I, Index GH, const PackedWeight<Scalar>* packed = nullptr) {
  if (packed != nullptr) {
    packed->multiply_set(projection, GH, inputs, I, bias);
  } else {
    rows_times_weight(projection, GH, inputs, I, rows, I, kernel, GH, GH, false, bias, false);
  }
}

// Given gate gradients dz [rows, G*H] (rows = T*N) of pre-activations z = inputs.kernel + states.recurrent + b:
//   dinputs = dz . kernel^T, dkernel = inputs^T . dz, drecurrent = states^T . dz, dbias = column sums of dz.
template <typename Scalar>
void weight_gradients(Scalar* dinputs /* [rows, I] */, Scalar* dkernel /* [I, GH] */,
                      Scalar* drecurrent /* [H, GH] */, Scalar* dbias /* [GH] */,
                      const Scalar* dz /* [rows, GH] */, const Scalar* inputs /* [rows, I] */,
                      const Scalar* kernel /* [I, GH] */, const Scalar* states /* [rows, H] */,
                      Index rows, Index I, Index H, Index GH) {
  rows_times_weight(dinputs, I, dz, GH, rows, GH, kernel, GH, I, true, nullptr, false);
  transposed_times(dkernel, GH, inputs, I, I, dz, GH, GH, rows);
  transposed_times(drecurrent, GH, states, H, H, dz, GH, GH, rows);
  column_sums(dbias, dz, GH, rows, GH);
}

}  // namespace rnnext

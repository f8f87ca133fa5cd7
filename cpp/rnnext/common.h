// Shared pieces of the rnnext engine: conventions, array views, activations, threading and the
// GEMM-shaped helpers that every cell uses before and after its time loop.
//
// Conventions (docs/conventions.md says the same at length):
//   T steps, N batch rows, I input size, H hidden size, G gate blocks (RNN 1, LSTM 4, coupled LSTM 3, GRU 3).
//   Sequences are time-major and row-major: x [T, N, I], y [T, N, H].
//   Weights: kernel [I, G*H], recurrent_kernel [H, G*H], bias [G*H]; gate blocks side by side along G*H.
//   Gate order: LSTM i,f,g,o (coupled: f,g,o); GRU r,z,n.
//   States are stored as h [T+1, N, H] with slot 0 = initial state, so step t reads h[t] and writes h[t+1].
//   lengths [N] (optional): step t of row n is valid when t < lengths[n]; invalid steps carry the state and
//   output zero. Weight gradients are assigned (never accumulated) by the engine.
//
// Parallelism: the hidden units are cut into fixed blocks of kUnitBlock units. Inside the time loop each
// thread owns whole blocks: it computes their gate columns with one small GEMM and runs the fused pointwise
// pass on them, so one barrier per step suffices. Block shapes never depend on the thread count, which keeps
// results bitwise identical for any number of threads.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace rnnext {

using Index = Eigen::Index;

template <typename Scalar>
using RowMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename Scalar>
using MatrixMap = Eigen::Map<RowMatrix<Scalar>>;
template <typename Scalar>
using ConstMatrixMap = Eigen::Map<const RowMatrix<Scalar>>;
// A column block of a row-major matrix: rows keep the parent's row stride.
template <typename Scalar>
using StridedMap = Eigen::Map<RowMatrix<Scalar>, 0, Eigen::OuterStride<>>;
template <typename Scalar>
using ConstStridedMap = Eigen::Map<const RowMatrix<Scalar>, 0, Eigen::OuterStride<>>;
template <typename Scalar>
using VectorMap = Eigen::Map<Eigen::Array<Scalar, Eigen::Dynamic, 1>>;
template <typename Scalar>
using ConstVectorMap = Eigen::Map<const Eigen::Array<Scalar, Eigen::Dynamic, 1>>;

// ---------------------------------------------------------------------------------------------------------
// Sizes of one call. Every buffer comment below uses these letters.
struct Dims {
  Index T = 0, N = 0, I = 0, H = 0;
};

// ---------------------------------------------------------------------------------------------------------
// Threads.
inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline void set_threads(int n) {
#ifdef _OPENMP
  omp_set_num_threads(n);
#endif
  Eigen::setNbThreads(n);
}

// Threads worth using inside the time loop: a barrier per step costs about a microsecond, so tiny steps
// run on one thread. The choice changes speed only, never results (blocks are fixed).
inline int loop_threads(Index N, Index H, Index G, Index unit_blocks) {
  const double flops_per_step = 2.0 * double(N) * double(H) * double(G) * double(H);
  int useful = flops_per_step < 2.0e5 ? 1 : max_threads();
  return int(std::max<Index>(1, std::min<Index>(useful, unit_blocks)));
}

// Hidden units [begin, begin + size) handled together by one thread.
struct UnitBlock {
  Index begin, size;
};

constexpr Index kUnitBlock = 32;

inline std::vector<UnitBlock> unit_blocks(Index H) {
  std::vector<UnitBlock> blocks;
  for (Index j = 0; j < H; j += kUnitBlock) blocks.push_back({j, std::min(kUnitBlock, H - j)});
  return blocks;
}

// Packs the gate columns of each unit block next to each other so one GEMM per block and step gives all of
// its gates: packed block b is [H, G*size_b] = [U_gate0[:, block] | U_gate1[:, block] | ...].
// Returns offsets into `packed` (one per block); the whole packing is H*G*H scalars, done once per call.
template <typename Scalar>
std::vector<Index> pack_recurrent_blocks(const Scalar* recurrent_kernel /* [H, G*H] */, Index H, Index G,
                                         const std::vector<UnitBlock>& blocks, std::vector<Scalar>& packed) {
  packed.resize(size_t(H * G * H));
  std::vector<Index> offsets;
  Index offset = 0;
  for (const UnitBlock& b : blocks) {
    offsets.push_back(offset);
    for (Index row = 0; row < H; ++row)
      for (Index g = 0; g < G; ++g)
        std::copy_n(recurrent_kernel + row * G * H + g * H + b.begin, b.size,
                    packed.data() + offset + row * G * b.size + g * b.size);
    offset += H * G * b.size;
  }
  return offsets;
}

// ---------------------------------------------------------------------------------------------------------
// Masking by lengths. `lengths == nullptr` means every step is valid.
inline bool step_valid(const int64_t* lengths, Index t, Index n) {
  return lengths == nullptr || t < lengths[n];
}

// ---------------------------------------------------------------------------------------------------------
// Activations on contiguous segments (Eigen vectorises tanh and logistic for float). Derivatives are written
// on the activation's output y.
enum class Activation { Tanh, Relu, Sigmoid };

// A short array of at most one unit block, kept on the stack.
template <typename Scalar>
using BlockArray = Eigen::Array<Scalar, Eigen::Dynamic, 1, 0, kUnitBlock, 1>;

// Segment [begin, begin + size) of row `row` of a row-major matrix with `width` columns.
template <typename Scalar>
VectorMap<Scalar> segment(Scalar* base, Index row, Index width, Index begin, Index size) {
  return VectorMap<Scalar>(base + row * width + begin, size);
}
template <typename Scalar>
ConstVectorMap<Scalar> segment(const Scalar* base, Index row, Index width, Index begin, Index size) {
  return ConstVectorMap<Scalar>(base + row * width + begin, size);
}

// Eigen's per-call GEMM threading is wasteful for the small products inside the time loop (the loop is
// already split over unit blocks), so it is switched off there and restored afterwards.
class EigenSingleThreaded {
 public:
  EigenSingleThreaded() : saved_(Eigen::nbThreads()) { Eigen::setNbThreads(1); }
  ~EigenSingleThreaded() { Eigen::setNbThreads(saved_); }
  EigenSingleThreaded(const EigenSingleThreaded&) = delete;
  EigenSingleThreaded& operator=(const EigenSingleThreaded&) = delete;

 private:
  int saved_;
};

// ---------------------------------------------------------------------------------------------------------
// The large products before and after the time loop, each one GEMM over all T*N rows (Eigen threads them).

// projection [rows, G*H] = inputs [rows, I] . kernel [I, G*H] + bias [G*H] (bias may be null)
template <typename Scalar>
void project_inputs(Scalar* projection, const Scalar* inputs, const Scalar* kernel, const Scalar* bias,
                    Index rows, Index I, Index GH) {
  MatrixMap<Scalar> out(projection, rows, GH);
  out.noalias() = ConstMatrixMap<Scalar>(inputs, rows, I) * ConstMatrixMap<Scalar>(kernel, I, GH);
  if (bias != nullptr) out.rowwise() += Eigen::Map<const Eigen::Matrix<Scalar, 1, Eigen::Dynamic>>(bias, GH);
}

// Given gate gradients dz [rows, G*H] (rows = T*N) of pre-activations z = inputs.kernel + states.recurrent + b:
//   dinputs = dz . kernel^T, dkernel = inputs^T . dz, drecurrent = states^T . dz, dbias = column sums of dz,
// each one GEMM over all rows.
template <typename Scalar>
void weight_gradients(Scalar* dinputs /* [rows, I] */, Scalar* dkernel /* [I, GH] */,
                      Scalar* drecurrent /* [H, GH] */, Scalar* dbias /* [GH] */,
                      const Scalar* dz /* [rows, GH] */, const Scalar* inputs /* [rows, I] */,
                      const Scalar* kernel /* [I, GH] */, const Scalar* states /* [rows, H] */,
                      Index rows, Index I, Index H, Index GH) {
  ConstMatrixMap<Scalar> grad(dz, rows, GH);
  MatrixMap<Scalar>(dinputs, rows, I).noalias() = grad * ConstMatrixMap<Scalar>(kernel, I, GH).transpose();
  MatrixMap<Scalar>(dkernel, I, GH).noalias() = ConstMatrixMap<Scalar>(inputs, rows, I).transpose() * grad;
  MatrixMap<Scalar>(drecurrent, H, GH).noalias() = ConstMatrixMap<Scalar>(states, rows, H).transpose() * grad;
  Eigen::Map<Eigen::Matrix<Scalar, 1, Eigen::Dynamic>>(dbias, GH) = grad.colwise().sum();
}

}  // namespace rnnext

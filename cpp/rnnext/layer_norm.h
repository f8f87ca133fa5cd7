// Layer normalisation as the layer-normalised cells use it (Ba, Kiros & Hinton 2016): statistics per row over
// all of a row's columns, normalised = (a - mean) * rstd with rstd = 1 / sqrt(var + kLayerNormEpsilon).
// Inside the time loop a row's columns are spread over unit blocks owned by different threads, so each block
// reduces its own columns to partial statistics, and a later stage (after the barrier between stages) combines
// the blocks' partials in block order: the same result for any thread count. Before and after the loop the
// rows are whole and each is normalised in one go.
#pragma once

#include "rnnext/common.h"
#include "rnnext/gemm.h"
#include "rnnext/time_loop.h"

namespace rnnext {

constexpr double kLayerNormEpsilon = 1e-5;  // haste's, PyTorch nn.LayerNorm's default

// Count, mean and sum of squared deviations from the mean of some of a row's values.
template <typename Scalar>
struct Moments {
  Scalar count, mean, m2;
};

// The moments of the union of two disjoint parts (Chan, Golub & LeVeque): no cancellation of large squares.
template <typename Scalar>
Moments<Scalar> combine(const Moments<Scalar>& a, const Moments<Scalar>& b) {
  const Scalar count = a.count + b.count, delta = b.mean - a.mean;
  return {count, a.mean + delta * (b.count / count), a.m2 + b.m2 + delta * delta * (a.count * b.count / count)};
}

// The sum of an array expression, added in an order fixed by its size alone: Eigen's sum() peels elements up to
// the buffer's alignment first, so the same values summed from another buffer (the cache-free pass's, another
// step's slot) could round differently. Eight independent lanes still vectorise.
template <typename Derived>
typename Derived::Scalar ordered_sum(const Eigen::ArrayBase<Derived>& values) {
  using Scalar = typename Derived::Scalar;
  constexpr Index kLanes = 8;
  const Derived& v = values.derived();
  const Index n = v.size();
  Scalar lanes[kLanes] = {};
  Index k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (Index lane = 0; lane < kLanes; ++lane) lanes[lane] += v.coeff(k + lane);
  for (; k < n; ++k) lanes[k % kLanes] += v.coeff(k);
  Scalar sum = lanes[0];
  for (Index lane = 1; lane < kLanes; ++lane) sum += lanes[lane];
  return sum;
}

// The moments of a run of values (two passes over values that sit in cache).
template <typename Derived>
Moments<typename Derived::Scalar> moments_of(const Eigen::ArrayBase<Derived>& values) {
  using Scalar = typename Derived::Scalar;
  const Scalar count = Scalar(values.size()), mean = ordered_sum(values) / count;
  return {count, mean, ordered_sum((values - mean).square())};
}

// Mean and 1/std of one row.
template <typename Scalar>
struct RowStats {
  Scalar mean, rstd;
};

template <typename Scalar>
RowStats<Scalar> row_stats(const Moments<Scalar>& m) {
  return {m.mean, Scalar(1) / std::sqrt(m.m2 / m.count + Scalar(kLayerNormEpsilon))};
}

// A row's statistics from its blocks' partial moments [blocks], combined in block order.
template <typename Scalar>
RowStats<Scalar> row_stats(const Moments<Scalar>* partial, Index blocks) {
  Moments<Scalar> m = partial[0];
  for (Index b = 1; b < blocks; ++b) m = combine(m, partial[b]);
  return row_stats(m);
}

// The two row means the backward pass of a normalisation needs, as block partial sums: of d (the gradient on the
// normalised values, gain applied) and of d * normalised.
template <typename Scalar>
struct BackwardSums {
  Scalar d, d_normalised;
};

template <typename Scalar>
BackwardSums<Scalar> total(const BackwardSums<Scalar>* partial, Index blocks) {
  BackwardSums<Scalar> sum = partial[0];
  for (Index b = 1; b < blocks; ++b) sum = {sum.d + partial[b].d, sum.d_normalised + partial[b].d_normalised};
  return sum;
}

// Which unit block of a row starts at unit j, and how many there are: the index of a block's partials.
struct BlockIndex {
  Index size, count;
  Index of(Index j) const { return j / size; }
};

// Rows processed together by one work item of the passes over whole rows.
constexpr Index kNormalisedRowChunk = 64;

// Before a loop: out [rows, n] = gain * normalise(in) + shift, row by row; the normalised values go to
// normalised [rows, n] and 1/std to rstd [rows] when they are not null (the cache of a training pass).
// out may be in.
template <typename Scalar>
void normalise_rows(Scalar* out, Scalar* normalised, Scalar* rstd, const Scalar* in, const Scalar* gain /* [n] */,
                    const Scalar* shift /* [n] */, Index rows, Index n) {
  parallel_chunks(chunk_count(rows, kNormalisedRowChunk), 8.0 * double(rows) * double(n), [&](Index chunk) {
    const Index last = std::min(rows, (chunk + 1) * kNormalisedRowChunk);
    for (Index row = chunk * kNormalisedRowChunk; row < last; ++row) {
      const RowStats<Scalar> s = row_stats(moments_of(ConstVectorMap<Scalar>(in + row * n, n)));
      VectorMap<Scalar> values(out + row * n, n);
      values = (ConstVectorMap<Scalar>(in + row * n, n) - s.mean) * s.rstd;
      if (normalised != nullptr) VectorMap<Scalar>(normalised + row * n, n) = values;
      if (rstd != nullptr) rstd[row] = s.rstd;
      values = values * ConstVectorMap<Scalar>(gain, n) + ConstVectorMap<Scalar>(shift, n);
    }
  });
}

// After a loop, in place: d [rows, n] holds the gradient on gain * normalised + shift, and becomes the one on
// the values that were normalised. Rows are time-major (row = t * N + batch row); masked steps get zero, not
// 0 * their normalised values, which are NaN where the padding is.
template <typename Scalar>
void normalise_rows_backward(Scalar* d, const Scalar* normalised /* [rows, n] */, const Scalar* rstd /* [rows] */,
                             const Scalar* gain /* [n] */, Index rows, Index n, const int64_t* lengths /* [N] or null */,
                             Index N) {
  parallel_chunks(chunk_count(rows, kNormalisedRowChunk), 8.0 * double(rows) * double(n), [&](Index chunk) {
    const Index last = std::min(rows, (chunk + 1) * kNormalisedRowChunk);
    for (Index row = chunk * kNormalisedRowChunk; row < last; ++row) {
      VectorMap<Scalar> grad(d + row * n, n);
      if (!step_valid(lengths, row / N, row % N)) {
        grad.setZero();
        continue;
      }
      ConstVectorMap<Scalar> norm(normalised + row * n, n);
      grad *= ConstVectorMap<Scalar>(gain, n);
      const Scalar mean_d = ordered_sum(grad) / Scalar(n), mean_dn = ordered_sum(grad * norm) / Scalar(n);
      grad = rstd[row] * (grad - mean_d - norm * mean_dn);
    }
  });
}

// out [n] = column sums of a * b over rows [rows, n], added row by row in order as column_sums does: the gain
// gradients, sum over rows of (gradient on the output) * normalised.
template <typename Scalar>
void column_product_sums(Scalar* out, const Scalar* a, const Scalar* b, Index rows, Index n) {
  parallel_chunks(chunk_count(n, kColumnChunk), 2.0 * double(rows) * double(n), [&](Index chunk) {
    const Index first = chunk * kColumnChunk, count = std::min(kColumnChunk, n - first);
    VectorMap<Scalar> sum(out + first, count);
    sum.setZero();
    for (Index row = 0; row < rows; ++row)
      sum += ConstVectorMap<Scalar>(a + row * n + first, count) * ConstVectorMap<Scalar>(b + row * n + first, count);
  });
}

// ---------------------------------------------------------------------------------------------------------
// What the layer-normalised cells (layer_norm_lstm.h, layer_norm_gru.h) share: the normalised input projection
// before the loop, the first forward stage (the recurrent product and its block moments), the backward stage
// through the recurrent normalisation, and the products' gradients after the loop. G: the gate blocks.

// Before the loop: out [rows, G*H] = LN(inputs . kernel; gain) + shift, with the cache's normalised values and
// 1/std when they are not null; `packed`: the kernel packed once for many calls (a stepper), or null.
template <typename Scalar>
void normalised_input_projection(Scalar* out, Scalar* normalised, Scalar* rstd, const Scalar* inputs /* [rows, I] */,
                                 const Scalar* kernel /* [I, GH] */, const Scalar* gain, const Scalar* shift,
                                 Index rows, Index I, Index GH, const PackedWeight<Scalar>* packed = nullptr) {
  project_inputs(out, inputs, kernel, static_cast<const Scalar*>(nullptr), rows, I, GH, packed);
  normalise_rows(out, normalised, rstd, out, gain, shift, rows, GH);
}

// Forward stage 1: recurrent[t] = h[t] . recurrent_kernel, and each block's moments of its G gate segments.
template <typename Scalar, Index G>
struct NormalisedRecurrentProduct {
  static constexpr bool packs = true, rows = true;
  GateColumns<Scalar>& U;
  Sequence<Scalar> h, recurrent;  // [T+1, N, H], [T, N, G*H]
  Moments<Scalar>* moments;       // [N, blocks]
  BlockIndex blocks;

  StepOperand<Scalar> operand(Index t) const { return U.operand(h.step(t), h.width); }
  void products(Index t, Index b, const UnitBlock& block) const {
    Scalar* out = recurrent.step(t);
    for (Index k = 0; k < G; ++k) {
      for (Index n = 0; n < recurrent.N; ++n)
        std::fill_n(out + n * recurrent.width + k * h.width + block.begin, block.size, Scalar(0));
      U.add(out + k * h.width + block.begin, recurrent.width, b, k);
    }
  }
  template <typename W>
  void row(Index t, Index n, Index j, W w) const {
    Moments<Scalar> m = moments_of(recurrent.segment(t, n, j, w));
    for (Index k = 1; k < G; ++k) m = combine(m, moments_of(recurrent.segment(t, n, k * h.width + j, w)));
    moments[n * blocks.count + blocks.of(j)] = m;
  }
  template <typename W>
  void masked_row(Index t, Index n, Index j, W w) const { row(t, n, j, w); }  // cached like valid rows
};

// A backward stage: through the recurrent normalisation, d_recurrent[t] (the gradient on h[t] . recurrent_kernel)
// from the gradient on the normalised term d_normalised[t] (gain not applied) and the block sums of the stage
// before.
template <typename Scalar, Index G>
struct NormalisedRecurrentBackward {
  static constexpr bool packs = false, rows = true;
  Sequence<Scalar> d_recurrent;                                        // [T, N, G*H]
  Sequence<const Scalar> d_normalised, recurrent_norm, recurrent_rstd;  // [T, N, G*H] x2, [T, N, 1]
  const BackwardSums<Scalar>* sums;                                    // [N, blocks]
  const Scalar* recurrent_gamma;                                       // [G*H]
  BlockIndex blocks;

  void products(Index, Index, const UnitBlock&) const {}
  template <typename W>
  void row(Index t, Index n, Index j, W w) const {
    const Index GH = d_normalised.width, H = GH / G;
    const BackwardSums<Scalar> sum = total(sums + n * blocks.count, blocks.count);
    const Scalar mean_d = sum.d / Scalar(GH), mean_dn = sum.d_normalised / Scalar(GH), rstd = recurrent_rstd.step(t)[n];
    for (Index k = 0; k < G; ++k) {
      const Index begin = k * H + j;
      d_recurrent.segment(t, n, begin, w) =
          rstd * (d_normalised.segment(t, n, begin, w) * segment(recurrent_gamma, 0, 0, begin, w) - mean_d -
                  recurrent_norm.segment(t, n, begin, w) * mean_dn);
    }
  }
  template <typename W>
  void masked_row(Index t, Index n, Index j, W w) const {
    const Index H = d_normalised.width / G;
    for (Index k = 0; k < G; ++k) d_recurrent.segment(t, n, k * H + j, w).setZero();
  }
};

// The block sums the stage above needs, of one row's block: d = d_normalised * gain over the G gate segments.
template <typename Scalar, Index G, typename W>
BackwardSums<Scalar> recurrent_block_sums(const Sequence<Scalar>& d_normalised, const Sequence<const Scalar>& recurrent_norm,
                                          const Scalar* recurrent_gamma, Index t, Index n, Index j, W w) {
  using BlockValues = BlockArray<Scalar, W>;
  const Index H = d_normalised.width / G;
  BackwardSums<Scalar> partial{Scalar(0), Scalar(0)};
  for (Index k = 0; k < G; ++k) {
    const BlockValues d = d_normalised.segment(t, n, k * H + j, w) * segment(recurrent_gamma, 0, 0, k * H + j, w);
    partial.d += ordered_sum(d);
    partial.d_normalised += ordered_sum(d * recurrent_norm.segment(t, n, k * H + j, w));
  }
  return partial;
}

// After the loop, the products' gradients, read from the operands as the products saw them (x and h[t] under
// their masks): drecurrent = h[t]^T . d_recurrent; d_projection [rows, GH] holds the gradient on
// LN(x . kernel; gain) and becomes the one on x . kernel, then dx = d_projection . kernel^T and
// dkernel = x^T . d_projection; last, from the masked operands' gradients to the operands'.
template <typename Scalar>
void product_gradients(Scalar* dx /* [rows, I] */, Scalar* dkernel /* [I, GH] */, Scalar* drecurrent /* [H, GH] */,
                       Scalar* d_projection, const Scalar* d_recurrent /* [rows, GH] */, const Scalar* h /* [T+1, N, H] */,
                       const Scalar* x /* [rows, I] */, const Scalar* kernel /* [I, GH] */,
                       const Scalar* input_norm /* [rows, GH] */, const Scalar* input_rstd /* [rows] */,
                       const Scalar* gain /* [GH] */, const MaskedOperands<Scalar>& masked,
                       const int64_t* lengths /* [N] or null */, const Dims& d, Index GH) {
  const Index rows = d.T * d.N, I = d.I, H = d.H;
  Workspace<Scalar> masked_states(masked.masks().state ? rows * H : 0);
  transposed_times(drecurrent, GH, masked.states(h, masked_states), H, H, d_recurrent, GH, GH, rows);
  normalise_rows_backward(d_projection, input_norm, input_rstd, gain, rows, GH, lengths, d.N);
  rows_times_weight(dx, I, d_projection, GH, rows, GH, kernel, GH, I, true, static_cast<const Scalar*>(nullptr), false);
  transposed_times(dkernel, GH, masked.inputs(x), I, I, d_projection, GH, GH, rows);
  masked.unmask(dx, drecurrent);
}

}  // namespace rnnext

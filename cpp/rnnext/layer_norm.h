// Layer normalisation as the layer-normalised cells use it (Ba, Kiros & Hinton 2016): statistics per row over
// all of a row's columns, normalised = (a - mean) * rstd with rstd = 1 / sqrt(var + kLayerNormEpsilon).
// Inside the time loop a row's columns are spread over unit blocks owned by different threads, so each block
// reduces its own columns to partial statistics, and a later stage (after the barrier between stages) combines
// the blocks' partials in block order: the same result for any thread count. Before and after the loop the
// rows are whole and each is normalised in one go.
#pragma once

#include "rnnext/common.h"

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
// the values that were normalised.
template <typename Scalar>
void normalise_rows_backward(Scalar* d, const Scalar* normalised /* [rows, n] */, const Scalar* rstd /* [rows] */,
                             const Scalar* gain /* [n] */, Index rows, Index n) {
  parallel_chunks(chunk_count(rows, kNormalisedRowChunk), 8.0 * double(rows) * double(n), [&](Index chunk) {
    const Index last = std::min(rows, (chunk + 1) * kNormalisedRowChunk);
    for (Index row = chunk * kNormalisedRowChunk; row < last; ++row) {
      VectorMap<Scalar> grad(d + row * n, n);
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

}  // namespace rnnext

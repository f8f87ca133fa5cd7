// Losses: each returns the reduced loss and writes the gradient of that loss with respect to its first input in
// the same pass (python/rnnext/losses.py documents the semantics; rnnext.reference holds the NumPy twins).
//   softmax_cross_entropy: logits [M, C] (M positions, C classes), integer class ids targets [M], over the
//     positions that count; the loss of a position is log(sum_k exp(x_k - max)) - (x_target - max).
//   binary_cross_entropy_with_logits, mean_squared_error: elementwise over n values.
// `scale` is the reduction: 1 / (positions or elements counted) for "mean", 1 for "sum"; the gradient is that of
// the scaled loss. Data stay in the inputs' dtype; the sums (a row's exp sum, the loss) are in double.
// Each row, or fixed chunk of elements, is computed by one thread, and the per-row or per-chunk losses are added
// in order afterwards, so results do not depend on the thread count.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "rnnext/common.h"
#include "rnnext/row_ops.h"

namespace rnnext {

// Which positions count: all; those with mask[m] != 0; or, for batch-first sequences [N, T] flattened to
// M = N*T positions, position m = n*T + t when t < lengths[n].
struct CountedPositions {
  const uint8_t* mask = nullptr;     // [M] or null
  const int64_t* lengths = nullptr;  // [N] or null
  Index steps = 1;                   // T, when lengths is given

  bool operator()(Index m) const {
    if (mask != nullptr) return mask[m] != 0;
    if (lengths != nullptr) return m % steps < lengths[m / steps];
    return true;
  }
};

struct TargetScan {
  Index counted;    // positions that count
  Index first_bad;  // the first counted position whose target is not in [0, C), or -1
};

// Targets are read at counted positions only, so padding may hold anything (-1, say).
inline TargetScan scan_targets(const int64_t* targets /* [M] */, const CountedPositions& counted, Index M, Index C) {
  TargetScan scan{0, -1};
  for (Index m = 0; m < M; ++m) {
    if (!counted(m)) continue;
    ++scan.counted;
    if (scan.first_bad < 0 && (targets[m] < 0 || targets[m] >= C)) scan.first_bad = m;
  }
  return scan;
}

// dlogits [M, C] = (softmax(x) - onehot(target)) * scale at counted rows, 0 elsewhere (whatever the logits
// hold there). Returns the scaled loss. Targets at counted positions must be in [0, C) (scan_targets).
// A NaN, or an infinity that makes the shifted logits NaN, in a counted row makes its loss and gradient NaN.
template <typename Scalar>
double softmax_cross_entropy(Scalar* dlogits /* [M, C] */, const Scalar* logits /* [M, C] */,
                             const int64_t* targets /* [M] */, const CountedPositions& counted, Index M, Index C,
                             double scale) {
  std::vector<double> row_loss(size_t(M), 0.0);
  for_each_row(M, kPointwiseCost * double(C), [&](Index m) {
    Scalar* grad = dlogits + m * C;
    if (!counted(m)) {
      std::fill_n(grad, C, Scalar(0));
      return;
    }
    const Scalar* x = logits + m * C;
    const Scalar shift = row_max(x, C);
    exp_shifted(grad, x, C, shift);  // grad holds exp(x - max) until it is scaled below
    const double sum = sum_in_double(grad, C);
    const int64_t target = targets[m];
    row_loss[size_t(m)] = std::log(sum) - (double(x[target]) - double(shift));
    VectorMap<Scalar>(grad, C) *= Scalar(scale / sum);
    grad[target] -= Scalar(scale);
  });
  double total = 0.0;
  for (double loss : row_loss) total += loss;
  return total * scale;
}

// Elements per work item of the elementwise losses: a fixed size, so the partial sums, and the order in which
// they are added, do not depend on the thread count.
constexpr Index kSumChunk = 4096;

// Sum over chunks of chunk_sum(first, count), chunks added in order.
template <typename ChunkSum>
double sum_over_chunks(Index n, double cost_per_element, ChunkSum chunk_sum) {
  std::vector<double> partial(size_t(chunk_count(n, kSumChunk)), 0.0);
  parallel_chunks(Index(partial.size()), double(n) * cost_per_element, [&](Index chunk) {
    const Index first = chunk * kSumChunk;
    partial[size_t(chunk)] = chunk_sum(first, std::min(kSumChunk, n - first));
  });
  double total = 0.0;
  for (double sum : partial) total += sum;
  return total;
}

// Per element: max(x, 0) - x*y + log1p(exp(-|x|)), which never overflows; gradient (sigmoid(x) - y) * scale
// with sigmoid written on exp(-|x|) too. Targets y in [0, 1] (checked by the caller). Returns the scaled loss.
template <typename Scalar>
double binary_cross_entropy_with_logits(Scalar* dlogits /* [n] */, const Scalar* logits /* [n] */,
                                        const Scalar* targets /* [n] */, Index n, double scale) {
  const Scalar grad_scale = Scalar(scale);
  const double total = sum_over_chunks(n, 3 * kPointwiseCost, [&](Index first, Index count) {
    return lane_sum(count, [&](Index k) {
      const Scalar x = logits[first + k], y = targets[first + k];
      const Scalar e = std::exp(-std::abs(x));
      const Scalar sigmoid_x = x >= Scalar(0) ? Scalar(1) / (Scalar(1) + e) : e / (Scalar(1) + e);
      dlogits[first + k] = (sigmoid_x - y) * grad_scale;
      // std::max(NaN, 0) is NaN, as np.maximum: a NaN logit gives a NaN loss
      return double(std::max(x, Scalar(0)) - x * y + std::log1p(e));
    });
  });
  return total * scale;
}

// Per element (p - t)^2 (squared in double); gradient 2 (p - t) * scale. Returns the scaled loss.
template <typename Scalar>
double mean_squared_error(Scalar* dpredictions /* [n] */, const Scalar* predictions /* [n] */,
                          const Scalar* targets /* [n] */, Index n, double scale) {
  const Scalar grad_scale = Scalar(2 * scale);
  const double total = sum_over_chunks(n, 4.0, [&](Index first, Index count) {
    return lane_sum(count, [&](Index k) {
      const Scalar residual = predictions[first + k] - targets[first + k];
      dpredictions[first + k] = residual * grad_scale;
      return double(residual) * double(residual);
    });
  });
  return total * scale;
}

}  // namespace rnnext

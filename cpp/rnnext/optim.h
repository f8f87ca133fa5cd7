// Optimizer updates, gradient clipping and zeroing: the elementwise work of a training step after backward.
//
// Each update reads a parameter's value, gradient and optimizer state and writes value and state in one pass over
// the elements. The formulas are those of rnnext.optim (torch.optim's), written operation for operation in the
// order of the NumPy code they replace, with every hyperparameter rounded to Scalar where NumPy rounds it (a
// Python float meeting a float32 array) and the derived constants (1 - alpha, bias corrections) computed in
// double as Python computes them. bind_optim.cpp, the one file that includes this header, is compiled with
// -ffp-contract=off (CMakeLists.txt): a fused multiply-add rounds once where NumPy rounds twice, so with it the
// results would differ from rnnext.reference's twins in the last bit; without it they are the same bits.
//
// Elementwise results do not depend on how the elements are split among threads. The one reduction, the squared
// norm of a list of gradients, is summed in double over fixed blocks of each array (ArrayBlock), each block in
// 16 running sums selected by the position in the block, and the blocks' sums added in list order: the same
// grouping for any thread count and any buffer alignment, so the norm is bitwise the same.
#pragma once

#include "rnnext/common.h"

#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

namespace rnnext {

// Calls body(std::true_type()) or body(std::false_type()), so a run-time option becomes a compile-time one and the
// element loops carry no branch.
template <typename Body>
void with_flag(bool flag, Body&& body) {
  if (flag) {
    body(std::true_type());
  } else {
    body(std::false_type());
  }
}

// ---------------------------------------------------------------------------------------------------------
// SGD (torch.optim.SGD, dampening 0):
//   g = grad + weight_decay * value
//   buf = g on the buffer's first update, else momentum * buf + g            (momentum > 0 only)
//   g = g + momentum * buf if nesterov else buf                              (momentum > 0 only)
//   value -= lr * g
struct SgdOptions {
  double lr, momentum, weight_decay;
  bool nesterov;
  bool initialize_buffer;  // the buffer's first update: its content is ignored and set to g
};

template <typename Scalar, bool WeightDecay, bool Momentum, bool Nesterov, bool InitializeBuffer>
void sgd_elements(Scalar* value, const Scalar* grad, Scalar* buffer, Index begin, Index end, const SgdOptions& o) {
  const Scalar lr = Scalar(o.lr), momentum = Scalar(o.momentum), weight_decay = Scalar(o.weight_decay);
  for (Index i = begin; i < end; ++i) {
    Scalar g = grad[i];
    if constexpr (WeightDecay) g = g + weight_decay * value[i];
    if constexpr (Momentum) {
      const Scalar b = InitializeBuffer ? g : buffer[i] * momentum + g;
      buffer[i] = b;
      g = Nesterov ? g + momentum * b : b;
    }
    value[i] = value[i] - lr * g;
  }
}

template <typename Scalar>
void sgd_update(Scalar* value /* [size] */, const Scalar* grad /* [size] */,
                Scalar* momentum_buffer /* [size], null without momentum */, Index size, const SgdOptions& o) {
  with_flag(o.weight_decay != 0, [&](auto weight_decay) {
    with_flag(o.momentum != 0, [&](auto momentum) {
      with_flag(o.nesterov, [&](auto nesterov) {
        with_flag(o.initialize_buffer, [&](auto initialize) {
          parallel_elements(size, [&](Index begin, Index end) {
            sgd_elements<Scalar, decltype(weight_decay)::value, decltype(momentum)::value, decltype(nesterov)::value,
                         decltype(initialize)::value>(value, grad, momentum_buffer, begin, end, o);
          });
        });
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------------------
// Adagrad (torch.optim.Adagrad, lr_decay 0):
//   g = grad + weight_decay * value
//   sum += g * g
//   value -= lr * g / (sqrt(sum) + eps)
struct AdagradOptions {
  double lr, eps, weight_decay;
};

template <typename Scalar, bool WeightDecay>
void adagrad_elements(Scalar* value, const Scalar* grad, Scalar* squared_sum, Index begin, Index end,
                      const AdagradOptions& o) {
  const Scalar lr = Scalar(o.lr), eps = Scalar(o.eps), weight_decay = Scalar(o.weight_decay);
  for (Index i = begin; i < end; ++i) {
    Scalar g = grad[i];
    if constexpr (WeightDecay) g = g + weight_decay * value[i];
    const Scalar s = squared_sum[i] + g * g;
    squared_sum[i] = s;
    value[i] = value[i] - lr * g / (std::sqrt(s) + eps);
  }
}

template <typename Scalar>
void adagrad_update(Scalar* value /* [size] */, const Scalar* grad /* [size] */, Scalar* squared_sum /* [size] */,
                    Index size, const AdagradOptions& o) {
  with_flag(o.weight_decay != 0, [&](auto weight_decay) {
    parallel_elements(size, [&](Index begin, Index end) {
      adagrad_elements<Scalar, decltype(weight_decay)::value>(value, grad, squared_sum, begin, end, o);
    });
  });
}

// ---------------------------------------------------------------------------------------------------------
// RMSprop (torch.optim.RMSprop, centered=False):
//   g = grad + weight_decay * value
//   square_avg = alpha * square_avg + (1 - alpha) * g * g
//   step = g / (sqrt(square_avg) + eps)
//   buf = momentum * buf + step; step = buf                                   (momentum > 0 only)
//   value -= lr * step
struct RmspropOptions {
  double lr, alpha, eps, momentum, weight_decay;
};

template <typename Scalar, bool WeightDecay, bool Momentum>
void rmsprop_elements(Scalar* value, const Scalar* grad, Scalar* square_avg, Scalar* buffer, Index begin, Index end,
                      const RmspropOptions& o) {
  const Scalar lr = Scalar(o.lr), alpha = Scalar(o.alpha), one_minus_alpha = Scalar(1.0 - o.alpha);
  const Scalar eps = Scalar(o.eps), momentum = Scalar(o.momentum), weight_decay = Scalar(o.weight_decay);
  for (Index i = begin; i < end; ++i) {
    Scalar g = grad[i];
    if constexpr (WeightDecay) g = g + weight_decay * value[i];
    const Scalar a = square_avg[i] * alpha + one_minus_alpha * g * g;
    square_avg[i] = a;
    Scalar step = g / (std::sqrt(a) + eps);
    if constexpr (Momentum) {
      step = buffer[i] * momentum + step;
      buffer[i] = step;
    }
    value[i] = value[i] - lr * step;
  }
}

template <typename Scalar>
void rmsprop_update(Scalar* value /* [size] */, const Scalar* grad /* [size] */, Scalar* square_avg /* [size] */,
                    Scalar* momentum_buffer /* [size], null without momentum */, Index size, const RmspropOptions& o) {
  with_flag(o.weight_decay != 0, [&](auto weight_decay) {
    with_flag(o.momentum != 0, [&](auto momentum) {
      parallel_elements(size, [&](Index begin, Index end) {
        rmsprop_elements<Scalar, decltype(weight_decay)::value, decltype(momentum)::value>(
            value, grad, square_avg, momentum_buffer, begin, end, o);
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------------------
// Adam and AdamW (torch.optim.Adam / AdamW, amsgrad=False), for the k-th update of a parameter (k = step >= 1):
//   Adam:  g = grad + weight_decay * value          AdamW: value *= 1 - lr * weight_decay; g = grad
//   m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g * g
//   value -= lr / (1 - beta1**k) * m / (sqrt(v) / sqrt(1 - beta2**k) + eps)
struct AdamOptions {
  double lr, beta1, beta2, eps, weight_decay;
  long long step;
  bool decoupled_weight_decay;  // AdamW
};

template <typename Scalar, bool CoupledDecay, bool DecoupledDecay>
void adam_elements(Scalar* value, const Scalar* grad, Scalar* m, Scalar* v, Index begin, Index end,
                   const AdamOptions& o) {
  const double k = double(o.step);
  const Scalar beta1 = Scalar(o.beta1), one_minus_beta1 = Scalar(1.0 - o.beta1);
  const Scalar beta2 = Scalar(o.beta2), one_minus_beta2 = Scalar(1.0 - o.beta2);
  const Scalar step_size = Scalar(o.lr / (1.0 - std::pow(o.beta1, k)));
  const Scalar root_correction = Scalar(std::sqrt(1.0 - std::pow(o.beta2, k)));
  const Scalar eps = Scalar(o.eps), weight_decay = Scalar(o.weight_decay);
  const Scalar shrink = Scalar(1.0 - o.lr * o.weight_decay);
  for (Index i = begin; i < end; ++i) {
    Scalar p = value[i];
    Scalar g = grad[i];
    if constexpr (CoupledDecay) g = g + weight_decay * p;
    if constexpr (DecoupledDecay) p = p * shrink;
    const Scalar first = m[i] * beta1 + one_minus_beta1 * g;
    const Scalar second = v[i] * beta2 + one_minus_beta2 * g * g;
    m[i] = first;
    v[i] = second;
    value[i] = p - step_size * first / (std::sqrt(second) / root_correction + eps);
  }
}

template <typename Scalar>
void adam_update(Scalar* value /* [size] */, const Scalar* grad /* [size] */, Scalar* m /* [size] */,
                 Scalar* v /* [size] */, Index size, const AdamOptions& o) {
  const bool decay = o.weight_decay != 0;
  with_flag(decay && !o.decoupled_weight_decay, [&](auto coupled) {
    with_flag(decay && o.decoupled_weight_decay, [&](auto decoupled) {
      parallel_elements(size, [&](Index begin, Index end) {
        adam_elements<Scalar, decltype(coupled)::value, decltype(decoupled)::value>(value, grad, m, v, begin, end, o);
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------------------
// Lists of arrays (the gradients of a model): clipping, the global norm and zeroing, each in one parallel pass
// over all of them. The arrays may mix float32 and float64.
struct FloatArray {
  void* data;
  Index size;
  bool is_float32;
};

// Elements [begin, begin + size) of arrays[array]. Every array is cut at multiples of kArrayBlock from its start.
struct ArrayBlock {
  size_t array;
  Index begin, size;
};
constexpr Index kArrayBlock = Index(1) << 14;

inline std::vector<ArrayBlock> array_blocks(const std::vector<FloatArray>& arrays) {
  std::vector<ArrayBlock> blocks;
  for (size_t a = 0; a < arrays.size(); ++a)
    for (Index begin = 0; begin < arrays[a].size; begin += kArrayBlock)
      blocks.push_back({a, begin, std::min(kArrayBlock, arrays[a].size - begin)});
  return blocks;
}

inline Index total_size(const std::vector<FloatArray>& arrays) {
  Index total = 0;
  for (const FloatArray& a : arrays) total += a.size;
  return total;
}

// Runs body(block index, typed pointer to the block's first element, block size) for every block.
template <typename Body>
void parallel_blocks(const std::vector<FloatArray>& arrays, const std::vector<ArrayBlock>& blocks, Body body) {
  const Index count = Index(blocks.size()), total = total_size(arrays);
  const TimedRun timed(typeid(Body), 0, 0, total, total >= kParallelElements ? max_threads() : 1);
#pragma omp parallel for schedule(static) num_threads(timed.threads()) if (timed.threads() > 1)
  for (Index b = 0; b < count; ++b) {
    const ArrayBlock& block = blocks[size_t(b)];
    const FloatArray& array = arrays[block.array];
    if (array.is_float32) {
      body(b, static_cast<float*>(array.data) + block.begin, block.size);
    } else {
      body(b, static_cast<double*>(array.data) + block.begin, block.size);
    }
  }
}

// Sum of x[i]^2 in double. Element i goes to running sum i % 16 (i counted from the block's start, itself a
// multiple of 16 from the array's start); 16 independent sums keep the additions pipelined and vectorised.
constexpr int kSquareLanes = 16;
static_assert(kArrayBlock % kSquareLanes == 0, "blocks must start on a lane boundary");

template <typename Scalar>
double sum_of_squares(const Scalar* x, Index size) {
  double lanes[kSquareLanes] = {};
  Index i = 0;
  for (; i + kSquareLanes <= size; i += kSquareLanes)
    for (int lane = 0; lane < kSquareLanes; ++lane) {
      const double value = double(x[i + lane]);
      lanes[lane] += value * value;
    }
  for (int lane = 0; i < size; ++i, ++lane) {
    const double value = double(x[i]);
    lanes[lane] += value * value;
  }
  double total = 0;
  for (double lane : lanes) total += lane;
  return total;
}

// The L2 norm of all elements of all arrays together (NaN or inf when some element is).
inline double global_norm(const std::vector<FloatArray>& arrays) {
  const std::vector<ArrayBlock> blocks = array_blocks(arrays);
  std::vector<double> block_sums(blocks.size());
  parallel_blocks(arrays, blocks, [&](Index b, auto* x, Index size) { block_sums[size_t(b)] = sum_of_squares(x, size); });
  double total = 0;
  for (double sum : block_sums) total += sum;
  return std::sqrt(total);
}

// torch.nn.utils.clip_grad_norm_: multiply every element by max_norm / (norm + 1e-6) when that is below 1; a
// non-finite norm scales nothing. Returns the norm before clipping.
inline double clip_by_global_norm(const std::vector<FloatArray>& arrays, double max_norm) {
  const double norm = global_norm(arrays);
  if (!std::isfinite(norm)) return norm;
  const double factor = max_norm / (norm + 1e-6);
  if (factor < 1) {
    parallel_blocks(arrays, array_blocks(arrays), [&](Index, auto* x, Index size) {
      using Scalar = std::remove_pointer_t<decltype(x)>;
      const Scalar scale = Scalar(factor);
      for (Index i = 0; i < size; ++i) x[i] = x[i] * scale;
    });
  }
  return norm;
}

// Every element clamped into [-clip_value, clip_value] as np.clip does it: the low end where it is greater, then
// the high end where it is smaller. A NaN fails both comparisons and stays, and a tie keeps the element, so the
// signs of zeros come out as NumPy's (-0.5 clamped to [-0.0, 0.0] is -0.0).
inline void clip_by_value(const std::vector<FloatArray>& arrays, double clip_value) {
  parallel_blocks(arrays, array_blocks(arrays), [&](Index, auto* x, Index size) {
    using Scalar = std::remove_pointer_t<decltype(x)>;
    const Scalar high = Scalar(clip_value), low = Scalar(-clip_value);
    for (Index i = 0; i < size; ++i) {
      Scalar value = x[i];
      value = low > value ? low : value;
      value = high < value ? high : value;
      x[i] = value;
    }
  });
}

inline void zero_all(const std::vector<FloatArray>& arrays) {
  parallel_blocks(arrays, array_blocks(arrays),
                  [](Index, auto* x, Index size) { std::memset(x, 0, size_t(size) * sizeof(*x)); });
}

}  // namespace rnnext

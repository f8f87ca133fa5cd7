// A stack of single-direction layers of one cell stepped one time step at a time (text generation): each
// layer's weights are packed once, when the stepper is made, and each step runs every layer in one call.
// Without it a step would pack every weight again (a one-step forward packs as much as a long one) and cross
// from Python to the engine once per layer. A step computes what the cell's forward pass computes for T = 1,
// bit for bit (the same Forward class, run without a cache).
#pragma once

#include <vector>

#include "rnnext/common.h"

namespace rnnext {

// Forward is a cell's forward class (LstmForward, GruForward, ProjectedLstmForward, ...): constructed from its
// Weights, the call's Dims, lengths and whether to pack for reuse; run(y, states0, states_n, x) with
// Forward::kStates states.
template <typename Scalar, typename Forward>
class Stepper {
 public:
  static constexpr int S = Forward::kStates;

  // weights[k] is layer k's; layer 0 reads inputs of size I, every layer above it the outputs below, of
  // output_width units (H, or an LSTM with projection's P). The weights must stay unchanged for the stepper's
  // lifetime (the caller keeps copies).
  Stepper(const std::vector<typename Forward::Weights>& weights, Index N, Index I, Index H, Index output_width)
      : between_(weights.size() > 1 ? N * output_width : 0) {
    layers_.reserve(weights.size());
    for (size_t k = 0; k < weights.size(); ++k)
      layers_.emplace_back(weights[k], Dims{1, N, k == 0 ? I : output_width, H}, nullptr, true);
  }

  // x [N, I] in; states0[k * S + s] (layer k's state s) in, states_n likewise out; y [N, output_width] the top
  // layer's output. states_n may not alias states0.
  void step(Scalar* y, const Scalar* x, const Scalar* const* states0, Scalar* const* states_n) {
    const Scalar* input = x;
    for (size_t k = 0; k < layers_.size(); ++k) {
      // Outputs alternate between y and one scratch buffer, ending in y: a layer never writes where it reads
      // (an RNN's output buffer holds its input projection).
      Scalar* output = (layers_.size() - 1 - k) % 2 == 0 ? y : between_.data();
      layers_[k].run(output, states0 + k * S, states_n + k * S, input);
      input = output;
    }
  }

 private:
  std::vector<Forward> layers_;
  std::vector<Scalar> between_;  // [N, output_width]
};

}  // namespace rnnext

// The engine's Stepper (rnnext/stepper.h) as a Python object, shared by the cells' bindings: a cell's binding
// (lstm_stepper, gru_stepper, rnn_stepper) checks and copies the layers' weights and makes the stepper; this
// class checks every step's arguments and runs it without the GIL.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bindings/checks.h"
#include "rnnext/stepper.h"

namespace rnnext::bindings {

class StepperHandle {
 public:
  // Type-erased Stepper::step of the handle's scalar type.
  using StepFunction = std::function<void(void* y, const void* x, const void* const* states0, void* const* states_n)>;

  struct Shape {
    py::ssize_t layers, N, I;
    Dim output;               // the width of every layer's output: H, or an LSTM with projection's P
    std::vector<Dim> states;  // the width of each of a layer's states
  };

  StepperHandle(std::string function, bool float32, Shape shape, std::vector<py::array> weights, StepFunction step)
      : function_(std::move(function)), float32_(float32), shape_(shape), weights_(std::move(weights)),
        step_(std::move(step)), mutex_(std::make_unique<std::mutex>()) {}

  // x [N, I] and states (one tuple of the states [N, width] per layer) -> (y [N, output], new states).
  py::tuple step(const py::handle& x, const py::handle& states) {
    const Args args(function_.c_str());
    return float32_ ? step_impl<float>(args, x, states) : step_impl<double>(args, x, states);
  }

  py::ssize_t batch_size() const { return shape_.N; }

 private:
  template <typename Scalar>
  py::tuple step_impl(const Args& args, const py::handle& x_obj, const py::handle& states_obj) {
    const Shape& s = shape_;
    const py::ssize_t S = py::ssize_t(s.states.size());
    auto x = args.array<Scalar>("x", x_obj, {{"N", s.N}, {"I", s.I}});
    if (!py::isinstance<py::sequence>(states_obj) || py::isinstance<py::str>(states_obj) ||
        py::len(states_obj) != size_t(s.layers))
      args.fail_type("states must be a list of " + std::to_string(s.layers) + " tuples (one per layer) of " +
                     states_description());
    const auto layer_states = py::reinterpret_borrow<py::sequence>(states_obj);
    std::vector<CArray<Scalar>> inputs, outputs;
    for (py::ssize_t k = 0; k < s.layers; ++k) {
      const py::object entry = layer_states[size_t(k)];
      if (!py::isinstance<py::tuple>(entry) || py::len(entry) != size_t(S))
        args.fail_type("states[" + std::to_string(k) + "] must be a tuple of " + states_description());
      const auto parts = py::reinterpret_borrow<py::tuple>(entry);
      for (py::ssize_t part = 0; part < S; ++part) {
        const std::string name = "states[" + std::to_string(k) + "][" + std::to_string(part) + "]";
        const Dim& width = s.states[size_t(part)];
        inputs.push_back(args.array<Scalar>(name.c_str(), parts[size_t(part)], {{"N", s.N}, width}));
        outputs.push_back(new_array<Scalar>({s.N, width.size}));
      }
    }
    std::vector<const void*> in_pointers;
    std::vector<void*> out_pointers;
    for (auto& a : inputs) in_pointers.push_back(a.data());
    for (auto& a : outputs) out_pointers.push_back(a.mutable_data());
    auto y = new_array<Scalar>({s.N, s.output.size});
    {
      py::gil_scoped_release release;  // before the lock: a thread waiting for it must not hold the GIL
      std::lock_guard<std::mutex> lock(*mutex_);  // one step at a time: the packed operands are scratch
      step_(y.mutable_data(), x.data(), in_pointers.data(), out_pointers.data());
    }
    py::list new_states;
    for (py::ssize_t k = 0; k < s.layers; ++k) {
      py::tuple parts(S);
      for (py::ssize_t part = 0; part < S; ++part) parts[size_t(part)] = outputs[size_t(k * S + part)];
      new_states.append(parts);
    }
    return py::make_tuple(y, new_states);
  }

  // "2 arrays ([N, H], [N, H])"
  std::string states_description() const {
    std::string shapes;
    for (const Dim& width : shape_.states) shapes += std::string(shapes.empty() ? "" : ", ") + "[N, " + width.label + "]";
    const size_t S = shape_.states.size();
    return std::to_string(S) + (S == 1 ? " array " : " arrays (") + shapes + (S == 1 ? "" : ")");
  }

  std::string function_;
  bool float32_;
  Shape shape_;
  std::vector<py::array> weights_;  // the stepper's own copies of the weights, which it reads at every step
  StepFunction step_;
  std::unique_ptr<std::mutex> mutex_;
};

// The layers argument of a *_stepper function: a non-empty list of per-layer weight tuples of `count` entries.
inline std::vector<py::tuple> stepper_layers(const Args& args, const py::handle& layers, size_t count,
                                             const char* entries) {
  if (!py::isinstance<py::sequence>(layers) || py::isinstance<py::str>(layers) || py::len(layers) == 0)
    args.fail_type(std::string("layers must be a non-empty list of ") + entries + " tuples, one per layer");
  std::vector<py::tuple> out;
  const auto sequence = py::reinterpret_borrow<py::sequence>(layers);
  for (size_t k = 0; k < py::len(sequence); ++k) {
    const py::object entry = sequence[k];
    if (!py::isinstance<py::tuple>(entry) || py::len(entry) != count)
      args.fail_type("layers[" + std::to_string(k) + "] must be a tuple " + entries);
    out.push_back(py::reinterpret_borrow<py::tuple>(entry));
  }
  return out;
}

// I from the first layer's kernel [I, G*H].
inline py::ssize_t stepper_input_size(const Args& args, const py::handle& kernel, py::ssize_t GH,
                                      const char* gates_label) {
  py::array a = args.numpy("layers[0].kernel", kernel);
  if (a.ndim() != 2 || a.shape(1) != GH)
    args.fail_value("layers[0].kernel has shape " + shape_string(a) + ", expected (I, " + gates_label + "=" +
                    std::to_string(GH) + ")");
  return a.shape(0);
}

// batch_size: the rows of every step, at least 1.
inline py::ssize_t stepper_batch_size(const Args& args, py::ssize_t batch_size) {
  if (batch_size < 1) args.fail_value("batch_size is " + std::to_string(batch_size) + ", expected at least 1");
  return batch_size;
}

// A checked copy of one layer weight, which the stepper owns (so later updates of the layer do not reach it).
template <typename Scalar>
CArray<Scalar> stepper_weight(const Args& args, size_t layer, const char* name, const py::handle& obj,
                              const std::vector<Dim>& dims) {
  const std::string label = "layers[" + std::to_string(layer) + "]." + name;
  CArray<Scalar> checked = args.array<Scalar>(label.c_str(), obj, dims);
  auto copy = new_array<Scalar>(std::vector<py::ssize_t>(checked.shape(), checked.shape() + checked.ndim()));
  std::copy_n(checked.data(), checked.size(), copy.mutable_data());
  return copy;
}

// Wraps a Stepper made from `weights` as a handle: each layer's output and states have H units, or the widths
// given (an LSTM with projection's (P, H) states and P outputs).
template <typename Scalar, typename Forward>
StepperHandle make_stepper_handle(const char* function, const std::vector<typename Forward::Weights>& weights,
                                  std::vector<py::array> owned, py::ssize_t N, py::ssize_t I, py::ssize_t H,
                                  std::optional<Dim> output = std::nullopt, std::vector<Dim> states = {}) {
  const Dim units{"H", H};
  if (states.empty()) states.assign(Forward::kStates, units);
  const StepperHandle::Shape shape{py::ssize_t(weights.size()), N, I, output.value_or(units), std::move(states)};
  auto stepper = std::make_shared<Stepper<Scalar, Forward>>(weights, N, I, H, shape.output.size);
  auto step = [stepper](void* y, const void* x, const void* const* states0, void* const* states_n) {
    stepper->step(static_cast<Scalar*>(y), static_cast<const Scalar*>(x),
                  reinterpret_cast<const Scalar* const*>(states0), reinterpret_cast<Scalar* const*>(states_n));
  };
  return StepperHandle(std::string(function) + ".step", std::is_same_v<Scalar, float>, shape, std::move(owned),
                       std::move(step));
}

}  // namespace rnnext::bindings

// Bindings for the optimizer updates and the gradient-list kernels (norm, clipping, zeroing): check the arrays
// and hyperparameters, release the GIL, call rnnext/optim.h. Compiled with -ffp-contract=off (see optim.h).
#include "bindings/checks.h"
#include "rnnext/optim.h"

#include <cmath>
#include <string>
#include <vector>

namespace rnnext::bindings {
namespace {

std::string number_text(double value) { return std::string(py::str(py::float_(value))); }

void check_number(const Args& args, const char* name, double value, double minimum) {
  if (!(std::isfinite(value) && value >= minimum))
    args.fail_value(std::string(name) + " is " + number_text(value) + ", expected a finite number >= " +
                    number_text(minimum));
}

// alpha in [0, 1], betas in [0, 1).
void check_fraction(const Args& args, const char* name, double value, bool one_allowed) {
  if (!(value >= 0 && (one_allowed ? value <= 1 : value < 1)))
    args.fail_value(std::string(name) + " is " + number_text(value) + ", expected a number in [0, 1" +
                    (one_allowed ? "]" : ")"));
}

// Every array of one update has the shape of value (any number of axes).
std::vector<Dim> shape_of(const py::array& value) {
  std::vector<Dim> dims;
  for (py::ssize_t k = 0; k < value.ndim(); ++k) dims.push_back({"", value.shape(k)});
  return dims;
}

// The arrays of one update: value and the state are written in place; grad is only read (a copy will do).
// In-place arrays are the caller's own objects, kept alive by the call's arguments, so their pointers stay valid.
template <typename Scalar>
struct UpdateArrays {
  const Args& args;
  CArray<Scalar> value, grad;

  UpdateArrays(const Args& args_, py::handle value_obj, py::handle grad_obj)
      : args(args_),
        value(args.inplace_array<Scalar>("value", value_obj, shape_of(args.numpy("value", value_obj)))),
        grad(args.array<Scalar>("grad", checked_shape("grad", grad_obj), shape_of(value))) {}

  // obj, refused with a message naming value's shape when its shape differs.
  py::handle checked_shape(const char* name, py::handle obj) const {
    const py::array a = args.numpy(name, obj);
    bool same = a.ndim() == value.ndim();
    for (py::ssize_t k = 0; same && k < a.ndim(); ++k) same = a.shape(k) == value.shape(k);
    if (!same)
      args.fail_value(std::string(name) + " has shape " + shape_string(a) + ", expected " + shape_string(value) +
                      " (the shape of value)");
    return obj;
  }
  Scalar* state(const char* name, py::handle obj) const {
    return args.inplace_array<Scalar>(name, checked_shape(name, obj), shape_of(value)).mutable_data();
  }
  // A momentum buffer: present exactly when momentum is not 0.
  Scalar* momentum_buffer(py::handle obj, double momentum) const {
    if (momentum == 0) {
      if (!obj.is_none()) args.fail_value("momentum_buffer is an array but momentum is 0; expected None");
      return nullptr;
    }
    if (obj.is_none()) args.fail_value("momentum_buffer is None but momentum is not 0; expected an array");
    return state("momentum_buffer", obj);
  }
  Index size() const { return Index(value.size()); }
};

// Calls body(Scalar()) with the dtype of value, the first floating argument of every update.
template <typename Body>
void with_value_dtype(const Args& args, py::handle value, Body&& body) {
  if (args.is_float32("value", value)) {
    body(float());
  } else {
    body(double());
  }
}

// A list of float32/float64 arrays, each of its own dtype. With `in_place` every array must be usable as it is;
// otherwise a non-contiguous one is read through a contiguous copy.
struct ArrayList {
  std::vector<py::array> keep;
  std::vector<FloatArray> arrays;

  ArrayList(const Args& args, const char* name, py::handle obj, bool in_place) {
    // A single array is a sequence too (of its rows), but never what the caller meant.
    if (!py::isinstance<py::sequence>(obj) || py::isinstance<py::str>(obj) || py::isinstance<py::array>(obj))
      args.fail_type(std::string(name) + " must be a list of NumPy arrays, got " +
                     std::string(py::str(py::type::of(obj))));
    const py::sequence items = py::reinterpret_borrow<py::sequence>(obj);
    for (size_t k = 0; k < items.size(); ++k) {
      const std::string item_name = std::string(name) + "[" + std::to_string(k) + "]";
      const py::array a = args.numpy(item_name.c_str(), items[k]);
      if (Args::has_dtype<float>(a)) {
        add<float>(args, item_name, a, in_place);
      } else if (Args::has_dtype<double>(a)) {
        add<double>(args, item_name, a, in_place);
      } else {
        args.fail_type(item_name + " has dtype " + std::string(py::str(a.dtype())) + ", expected float32 or float64");
      }
    }
  }

  template <typename Scalar>
  void add(const Args& args, const std::string& name, const py::array& a, bool in_place) {
    const std::vector<Dim> dims = shape_of(a);
    CArray<Scalar> checked = in_place ? args.inplace_array<Scalar>(name.c_str(), a, dims)
                                      : args.array<Scalar>(name.c_str(), a, dims);
    arrays.push_back({checked.mutable_data(), Index(checked.size()), std::is_same_v<Scalar, float>});
    keep.push_back(checked);
  }
};

}  // namespace

void bind_optim(py::module_& m) {
  m.def(
      "sgd_update",
      [](py::handle value, py::handle grad, py::handle momentum_buffer, double lr, double momentum, bool nesterov,
         double weight_decay, bool initialize_buffer) {
        const Args args("sgd_update");
        check_number(args, "lr", lr, 0);
        check_number(args, "momentum", momentum, 0);
        check_number(args, "weight_decay", weight_decay, 0);
        if (nesterov && momentum == 0) args.fail_value("nesterov=True needs momentum > 0");
        with_value_dtype(args, value, [&](auto scalar) {
          using Scalar = decltype(scalar);
          UpdateArrays<Scalar> a(args, value, grad);
          Scalar* buffer = a.momentum_buffer(momentum_buffer, momentum);
          const SgdOptions options{lr, momentum, weight_decay, nesterov, initialize_buffer};
          py::gil_scoped_release release;
          sgd_update(a.value.mutable_data(), a.grad.data(), buffer, a.size(), options);
        });
      },
      py::arg("value"), py::arg("grad"), py::arg("momentum_buffer"), py::arg("lr"), py::arg("momentum"),
      py::arg("nesterov"), py::arg("weight_decay"), py::arg("initialize_buffer"),
      "SGD step in place on value (and momentum_buffer, None when momentum is 0), as torch.optim.SGD.\n"
      "initialize_buffer: the buffer's first update (its content is ignored and set to the gradient).");
  m.def(
      "adagrad_update",
      [](py::handle value, py::handle grad, py::handle squared_sum, double lr, double eps, double weight_decay) {
        const Args args("adagrad_update");
        check_number(args, "lr", lr, 0);
        check_number(args, "eps", eps, 0);
        check_number(args, "weight_decay", weight_decay, 0);
        with_value_dtype(args, value, [&](auto scalar) {
          using Scalar = decltype(scalar);
          UpdateArrays<Scalar> a(args, value, grad);
          Scalar* sum = a.state("squared_sum", squared_sum);
          py::gil_scoped_release release;
          adagrad_update(a.value.mutable_data(), a.grad.data(), sum, a.size(), AdagradOptions{lr, eps, weight_decay});
        });
      },
      py::arg("value"), py::arg("grad"), py::arg("squared_sum"), py::arg("lr"), py::arg("eps"),
      py::arg("weight_decay"), "Adagrad step in place on value and squared_sum, as torch.optim.Adagrad.");
  m.def(
      "rmsprop_update",
      [](py::handle value, py::handle grad, py::handle square_avg, py::handle momentum_buffer, double lr,
         double alpha, double eps, double momentum, double weight_decay) {
        const Args args("rmsprop_update");
        check_number(args, "lr", lr, 0);
        check_fraction(args, "alpha", alpha, true);
        check_number(args, "eps", eps, 0);
        check_number(args, "momentum", momentum, 0);
        check_number(args, "weight_decay", weight_decay, 0);
        with_value_dtype(args, value, [&](auto scalar) {
          using Scalar = decltype(scalar);
          UpdateArrays<Scalar> a(args, value, grad);
          Scalar* average = a.state("square_avg", square_avg);
          Scalar* buffer = a.momentum_buffer(momentum_buffer, momentum);
          const RmspropOptions options{lr, alpha, eps, momentum, weight_decay};
          py::gil_scoped_release release;
          rmsprop_update(a.value.mutable_data(), a.grad.data(), average, buffer, a.size(), options);
        });
      },
      py::arg("value"), py::arg("grad"), py::arg("square_avg"), py::arg("momentum_buffer"), py::arg("lr"),
      py::arg("alpha"), py::arg("eps"), py::arg("momentum"), py::arg("weight_decay"),
      "RMSprop step in place on value, square_avg (and momentum_buffer, None when momentum is 0), as "
      "torch.optim.RMSprop.");
  m.def(
      "adam_update",
      [](py::handle value, py::handle grad, py::handle m_obj, py::handle v_obj, long long step, double lr,
         double beta1, double beta2, double eps, double weight_decay, bool decoupled_weight_decay) {
        const Args args("adam_update");
        if (step < 1) args.fail_value("step is " + std::to_string(step) + ", expected the update's number >= 1");
        check_number(args, "lr", lr, 0);
        check_fraction(args, "beta1", beta1, false);
        check_fraction(args, "beta2", beta2, false);
        check_number(args, "eps", eps, 0);
        check_number(args, "weight_decay", weight_decay, 0);
        with_value_dtype(args, value, [&](auto scalar) {
          using Scalar = decltype(scalar);
          UpdateArrays<Scalar> a(args, value, grad);
          Scalar* m = a.state("m", m_obj);
          Scalar* v = a.state("v", v_obj);
          const AdamOptions options{lr, beta1, beta2, eps, weight_decay, step, decoupled_weight_decay};
          py::gil_scoped_release release;
          adam_update(a.value.mutable_data(), a.grad.data(), m, v, a.size(), options);
        });
      },
      py::arg("value"), py::arg("grad"), py::arg("m"), py::arg("v"), py::arg("step"), py::arg("lr"), py::arg("beta1"),
      py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"), py::arg("decoupled_weight_decay"),
      "Adam step number `step` (>= 1) in place on value, m and v, as torch.optim.Adam; with "
      "decoupled_weight_decay, AdamW's.");

  m.def(
      "grad_norm",
      [](py::handle grads) {
        const ArrayList list(Args("grad_norm"), "grads", grads, false);
        py::gil_scoped_release release;
        return global_norm(list.arrays);
      },
      py::arg("grads"),
      "L2 norm of all elements of a list of float32/float64 arrays together, summed in float64; bitwise the same "
      "for any thread count.");
  m.def(
      "clip_grad_norm",
      [](py::handle grads, double max_norm) {
        const Args args("clip_grad_norm");
        check_number(args, "max_norm", max_norm, 0);
        const ArrayList list(args, "grads", grads, true);
        py::gil_scoped_release release;
        return clip_by_global_norm(list.arrays, max_norm);
      },
      py::arg("grads"), py::arg("max_norm"),
      "Scale the arrays in place by max_norm / (norm + 1e-6) when that is below 1 and the norm is finite; "
      "returns the norm before clipping (grad_norm's).");
  m.def(
      "clip_grad_value",
      [](py::handle grads, double clip_value) {
        const Args args("clip_grad_value");
        check_number(args, "clip_value", clip_value, 0);
        const ArrayList list(args, "grads", grads, true);
        py::gil_scoped_release release;
        clip_by_value(list.arrays, clip_value);
      },
      py::arg("grads"), py::arg("clip_value"),
      "Clamp every element of the arrays into [-clip_value, clip_value] in place, as np.clip (NaN stays NaN).");
  m.def(
      "zero_grads",
      [](py::handle grads) {
        const ArrayList list(Args("zero_grads"), "grads", grads, true);
        py::gil_scoped_release release;
        zero_all(list.arrays);
      },
      py::arg("grads"), "Set every element of a list of float32/float64 arrays to zero, in one parallel pass.");
}

}  // namespace rnnext::bindings

// Bindings for the losses: check and convert arguments, release the GIL, call rnnext::{softmax_cross_entropy, ...}.
// Each returns (loss as a Python float, gradient with the first argument's shape and dtype).
#include "bindings/checks.h"
#include "rnnext/losses.h"

namespace rnnext::bindings {
namespace {

// "mean" (true) or "sum" (false).
bool is_mean(const Args& args, const py::handle& reduction) {
  if (py::isinstance<py::str>(reduction)) {
    const std::string name = reduction.cast<std::string>();
    if (name == "mean") return true;
    if (name == "sum") return false;
  }
  args.fail_value("reduction is " + std::string(py::repr(reduction)) + ", expected one of ('mean', 'sum')");
}

// a's shape, or its first `axes` axes, as plain numbers for messages and checks.
std::vector<Dim> shape_dims(const py::array& a, py::ssize_t axes) {
  std::vector<Dim> dims;
  for (py::ssize_t k = 0; k < axes; ++k) dims.push_back({"", a.shape(k)});
  return dims;
}

void check_positions(const Args& args, const char* name, const py::array& a, const std::vector<Dim>& positions) {
  bool same = a.ndim() == py::ssize_t(positions.size());
  for (size_t k = 0; same && k < positions.size(); ++k) same = a.shape(py::ssize_t(k)) == positions[k].size;
  if (!same)
    args.fail_value(std::string(name) + " has shape " + shape_string(a) + ", expected logits.shape[:-1] = " +
                    expected_string(positions));
}

// mask: bool, or numbers that are all 0 or 1, as one byte per position.
CArray<uint8_t> mask_bytes(const Args& args, const py::handle& obj, const std::vector<Dim>& positions) {
  const py::array a = args.numpy("mask", obj);
  check_positions(args, "mask", a, positions);
  const char kind = a.dtype().kind();
  if (kind != 'b' && kind != 'i' && kind != 'u' && kind != 'f')
    args.fail_type("mask has dtype " + std::string(py::str(a.dtype())) + ", expected bool or numbers 0 and 1");
  const auto values = CArray<double>::ensure(a.attr("astype")("float64"));
  CArray<uint8_t> bytes(std::vector<py::ssize_t>{values.size()});
  for (py::ssize_t m = 0; m < values.size(); ++m) {
    const double v = values.data()[m];
    if (v != 0.0 && v != 1.0)
      args.fail_value("mask must be bool or contain only 0 and 1, got " + std::string(py::repr(py::float_(v))));
    bytes.mutable_data()[m] = uint8_t(v);
  }
  return bytes;
}

template <typename Scalar>
py::tuple softmax_cross_entropy_impl(const Args& args, py::handle logits_obj, py::handle targets_obj,
                                     py::handle mask_obj, py::handle lengths_obj, bool mean) {
  const py::array logits_in = args.numpy("logits", logits_obj);
  const py::ssize_t axes = logits_in.ndim();
  if (axes < 1 || logits_in.shape(axes - 1) < 1)
    args.fail_value("logits has shape " + shape_string(logits_in) + ", expected (..., C) with C >= 1 classes");
  auto logits = args.array<Scalar>("logits", logits_in, shape_dims(logits_in, axes));
  const py::ssize_t C = logits.shape(axes - 1), M = logits.size() / C;
  const std::vector<Dim> positions = shape_dims(logits_in, axes - 1);

  const py::array targets_in = args.numpy("targets", targets_obj);
  check_positions(args, "targets", targets_in, positions);
  if (targets_in.dtype().kind() != 'i' && targets_in.dtype().kind() != 'u')
    args.fail_type("targets has dtype " + std::string(py::str(targets_in.dtype())) +
                   ", expected an integer dtype (class indices)");
  // astype, since ensure() refuses unsafe casts; values of 2**63 and above wrap to negative ids here and are
  // reported below as the caller wrote them.
  const auto targets = CArray<int64_t>::ensure(targets_in.attr("astype")("int64", py::arg("copy") = false));

  CountedPositions counted;
  std::optional<CArray<uint8_t>> mask;
  std::optional<CArray<int64_t>> lengths;
  if (!mask_obj.is_none() && !lengths_obj.is_none()) args.fail_value("pass mask or lengths, not both");
  if (!mask_obj.is_none()) {
    mask = mask_bytes(args, mask_obj, positions);
    counted.mask = mask->data();
  }
  if (!lengths_obj.is_none()) {
    if (axes != 3)
      args.fail_value("lengths needs logits of shape (N, T, C), got logits of shape " + shape_string(logits_in));
    lengths = args.lengths(lengths_obj, logits.shape(1), logits.shape(0));
    counted.lengths = lengths->data();
    counted.steps = logits.shape(1);
  }

  const TargetScan scan = scan_targets(targets.data(), counted, M, C);
  if (scan.first_bad >= 0) {
    const py::object as_written = targets_in.attr("reshape")(-1)[py::int_(scan.first_bad)];
    args.fail_value("targets contains " + std::string(py::str(as_written)) +
                    " at a counted position, expected class indices in [0, C=" + std::to_string(C) + ")");
  }
  const double scale = mean && scan.counted > 0 ? 1.0 / double(scan.counted) : 1.0;

  auto grad = new_array<Scalar>(std::vector<py::ssize_t>(logits.shape(), logits.shape() + axes));
  double loss;
  {
    py::gil_scoped_release release;
    loss = softmax_cross_entropy(grad.mutable_data(), logits.data(), targets.data(), counted, M, C, scale);
  }
  return py::make_tuple(loss, grad);
}

// The elementwise losses: `first` (logits or predictions) and targets of one shape and dtype.
template <typename Scalar, typename Kernel>
py::tuple elementwise_loss(const Args& args, const char* first_name, py::handle first_obj, py::handle targets_obj,
                           bool mean, bool targets_in_unit_interval, Kernel kernel) {
  const py::array first_in = args.numpy(first_name, first_obj);
  const std::vector<Dim> dims = shape_dims(first_in, first_in.ndim());
  auto first = args.array<Scalar>(first_name, first_in, dims);
  auto targets = args.array<Scalar>("targets", targets_obj, dims);
  const py::ssize_t n = first.size();
  if (targets_in_unit_interval)
    for (py::ssize_t k = 0; k < n; ++k) {
      const Scalar t = targets.data()[k];
      if (!(t >= Scalar(0) && t <= Scalar(1)))  // negated, so NaN fails too
        args.fail_value("targets must lie in [0, 1], got " + std::string(py::repr(py::float_(double(t)))) +
                        " at flat index " + std::to_string(k));
    }
  const double scale = mean && n > 0 ? 1.0 / double(n) : 1.0;
  auto grad = new_array<Scalar>(std::vector<py::ssize_t>(first.shape(), first.shape() + first.ndim()));
  double loss;
  {
    py::gil_scoped_release release;
    loss = kernel(grad.mutable_data(), first.data(), targets.data(), Index(n), scale);
  }
  return py::make_tuple(loss, grad);
}

}  // namespace

void bind_losses(py::module_& m) {
  m.def(
      "softmax_cross_entropy",
      [](py::handle logits, py::handle targets, py::handle mask, py::handle lengths, py::handle reduction) {
        const Args args("softmax_cross_entropy");
        const bool mean = is_mean(args, reduction);
        return with_dtype(args, "logits", logits, [&](auto scalar) {
          return softmax_cross_entropy_impl<decltype(scalar)>(args, logits, targets, mask, lengths, mean);
        });
      },
      py::arg("logits"), py::arg("targets"), py::arg("mask") = py::none(), py::arg("lengths") = py::none(),
      py::arg("reduction") = "mean",
      "Softmax cross-entropy of integer targets [...] under logits [..., C], over the positions that count (mask\n"
      "[...] bool or 0/1, or lengths [N] for logits [N, T, C]); 'mean' divides by the counted positions.\n"
      "Returns (loss, dloss/dlogits). See rnnext.losses.softmax_cross_entropy.");
  m.def(
      "binary_cross_entropy_with_logits",
      [](py::handle logits, py::handle targets, py::handle reduction) {
        const Args args("binary_cross_entropy_with_logits");
        const bool mean = is_mean(args, reduction);
        return with_dtype(args, "logits", logits, [&](auto scalar) {
          using Scalar = decltype(scalar);
          return elementwise_loss<Scalar>(args, "logits", logits, targets, mean, true,
                                          &rnnext::binary_cross_entropy_with_logits<Scalar>);
        });
      },
      py::arg("logits"), py::arg("targets"), py::arg("reduction") = "mean",
      "Binary cross-entropy of sigmoid(logits) against targets in [0, 1] of the same shape and dtype.\n"
      "Returns (loss, dloss/dlogits). See rnnext.losses.binary_cross_entropy_with_logits.");
  m.def(
      "mean_squared_error",
      [](py::handle predictions, py::handle targets, py::handle reduction) {
        const Args args("mean_squared_error");
        const bool mean = is_mean(args, reduction);
        return with_dtype(args, "predictions", predictions, [&](auto scalar) {
          using Scalar = decltype(scalar);
          return elementwise_loss<Scalar>(args, "predictions", predictions, targets, mean, false,
                                          &rnnext::mean_squared_error<Scalar>);
        });
      },
      py::arg("predictions"), py::arg("targets"), py::arg("reduction") = "mean",
      "Squared error of predictions against targets of the same shape and dtype, averaged over the elements for\n"
      "'mean'. Returns (loss, dloss/dpredictions). See rnnext.losses.mean_squared_error.");
}

}  // namespace rnnext::bindings

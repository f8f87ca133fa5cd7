// rnnext._cuda: the CUDA engine's Python module (built only with -DRNNEXT_CUDA=ON). The bindings check arguments
// with the CPU engine's Args (bindings/checks.h), copy NumPy arrays to the device, release the GIL and call
// cpp/cuda/cells.h; a forward pass returns a DeviceCache that keeps everything its backward pass reads (inputs,
// weights, states, gates) on the device, and the backward pass copies only the gradients back.
#include <memory>
#include <string>

#include "bindings/checks.h"
#include "cuda/cells.h"

namespace rnnext::bindings {
namespace {

namespace gpu = rnnext::cuda;

// The CUDA device count, or the reason there is none (no driver, no device): never throws, so that build_info
// and the "no GPU" errors can say why.
struct DeviceQuery {
  int count = 0;
  std::string error;
};

DeviceQuery query_devices() {
  DeviceQuery query;
  const cudaError_t status = cudaGetDeviceCount(&query.count);
  if (status != cudaSuccess) {
    query.count = 0;
    query.error = std::string("cudaGetDeviceCount: ") + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")";
    cudaGetLastError();  // clear it, so that it is not reported by a later, unrelated check
  } else if (query.count == 0) {
    query.error = "cudaGetDeviceCount: no CUDA device";
  }
  return query;
}

void require_device(const char* function) {
  const DeviceQuery query = query_devices();
  if (query.count == 0)
    throw std::runtime_error(std::string(function) + ": no CUDA device to run on (" + query.error +
                             "); use the CPU engine (device='cpu')");
}

// A forward pass kept on the device for its backward pass; one of the two dtypes is set.
struct DeviceCache {
  std::string cell;  // "rnn", "lstm" or "gru"
  std::unique_ptr<gpu::Run<float>> run32;
  std::unique_ptr<gpu::Run<double>> run64;

  template <typename Scalar>
  const gpu::Run<Scalar>* run() const {
    if constexpr (std::is_same_v<Scalar, float>) {
      return run32.get();
    } else {
      return run64.get();
    }
  }
  gpu::Dims dims() const { return run32 ? run32->d : run64->d; }
};

template <typename Scalar>
gpu::DeviceBuffer<Scalar> upload(const CArray<Scalar>& a) {
  return gpu::DeviceBuffer<Scalar>(a.data(), a.size());
}
template <typename Scalar>
gpu::DeviceBuffer<Scalar> upload(const std::optional<CArray<Scalar>>& a) {
  return a ? upload(*a) : gpu::DeviceBuffer<Scalar>();
}

template <typename Scalar>
CArray<Scalar> download(const gpu::DeviceBuffer<Scalar>& buffer, std::vector<py::ssize_t> shape, int64_t offset = 0) {
  CArray<Scalar> out(shape);
  buffer.download(out.mutable_data(), out.size(), offset);
  return out;
}

// What every cell's forward binding shares: checked host arrays in, a filled Run and the outputs out.
template <typename Scalar>
struct ForwardArgs {
  CArray<Scalar> x, h0, kernel, recurrent_kernel, bias;
  std::optional<CArray<Scalar>> c0, peephole;
  std::optional<CArray<int64_t>> lengths;
};

template <typename Scalar>
py::tuple run_forward(const char* function, const char* cell, int64_t G, const gpu::CellOptions& options,
                      ForwardArgs<Scalar>& in, bool keep_cache, void (*forward)(gpu::Run<Scalar>&)) {
  require_device(function);
  const py::ssize_t T = in.x.shape(0), N = in.x.shape(1), I = in.x.shape(2), H = in.h0.shape(1);
  auto run = std::make_unique<gpu::Run<Scalar>>();
  {
    py::gil_scoped_release release;
    run->d = {T, N, I, H};
    run->options = options;
    run->G = G;
    run->x = upload(in.x);
    run->kernel = upload(in.kernel);
    run->recurrent_kernel = upload(in.recurrent_kernel);
    run->bias = upload(in.bias);
    run->peephole = upload(in.peephole);
    run->lengths = upload(in.lengths);
    run->y = gpu::DeviceBuffer<Scalar>(T * N * H);
    run->h = gpu::DeviceBuffer<Scalar>((T + 1) * N * H);
    run->h.upload(in.h0.data(), N * H);
    if (in.c0) {
      run->c = gpu::DeviceBuffer<Scalar>((T + 1) * N * H);
      run->c.upload(in.c0->data(), N * H);
    }
    if (G > 1) run->gates = gpu::DeviceBuffer<Scalar>(T * N * G * H);
    if (std::string(cell) == "gru") run->recurrent = gpu::DeviceBuffer<Scalar>(T * N * H);
    forward(*run);
  }
  py::list out;
  out.append(download(run->y, {T, N, H}));
  out.append(download(run->h, {N, H}, T * N * H));
  if (in.c0) out.append(download(run->c, {N, H}, T * N * H));
  if (keep_cache) {
    auto cache = std::make_unique<DeviceCache>();
    cache->cell = cell;
    if constexpr (std::is_same_v<Scalar, float>) {
      cache->run32 = std::move(run);
    } else {
      cache->run64 = std::move(run);
    }
    out.append(py::cast(std::move(cache)));
  } else {
    out.append(py::none());
  }
  return py::tuple(out);
}

// The cache argument of a backward pass: a DeviceCache of this cell from a forward pass that kept it.
const DeviceCache& device_cache(const Args& args, const py::handle& obj, const char* cell) {
  if (obj.is_none())
    args.fail_value("cache is None: the forward call ran with keep_cache=False, so there is nothing to "
                    "differentiate; run it with keep_cache=True");
  if (!py::isinstance<DeviceCache>(obj))
    args.fail_type("cache must be the DeviceCache returned by rnnext._cuda's forward call, got " +
                   std::string(py::str(py::type::of(obj))));
  const DeviceCache& cache = obj.cast<const DeviceCache&>();
  if (cache.cell != cell) args.fail_value("cache comes from a " + cache.cell + " forward pass, expected " + cell);
  return cache;
}

// The gradients of a backward pass, with dh_n (and dc_n) uploaded as the starting state gradients.
template <typename Scalar>
py::dict run_backward(const Args& args, const char* function, const DeviceCache& cache, py::handle dy_obj,
                      py::handle dh_obj, py::handle dc_obj) {
  require_device(function);
  const gpu::Run<Scalar>& run = *cache.run<Scalar>();
  auto* backward = cache.cell == "rnn" ? &gpu::rnn_backward<Scalar>
                   : cache.cell == "lstm" ? &gpu::lstm_backward<Scalar>
                                          : &gpu::gru_backward<Scalar>;
  std::vector<py::ssize_t> bias_shape = {run.bias.size()};
  if (cache.cell == "gru" && run.options.reset_after) bias_shape = {2, run.bias.size() / 2};
  const py::ssize_t T = run.d.T, N = run.d.N, I = run.d.I, H = run.d.H, GH = run.G * H;
  const bool lstm = cache.cell == "lstm";
  auto dy = args.optional_array<Scalar>("dy", dy_obj, {{"T", T}, {"N", N}, {"H", H}});
  auto dh_n = args.optional_array<Scalar>("dh_n", dh_obj, {{"N", N}, {"H", H}});
  std::optional<CArray<Scalar>> dc_n;
  if (lstm) dc_n = args.optional_array<Scalar>("dc_n", dc_obj, {{"N", N}, {"H", H}});
  const py::ssize_t P = run.peephole.size() / std::max<py::ssize_t>(H, 1);
  gpu::Grads<Scalar> grads;
  {
    py::gil_scoped_release release;
    const gpu::DeviceBuffer<Scalar> dy_device = upload(dy);
    grads.x = gpu::DeviceBuffer<Scalar>(T * N * I);
    grads.h0 = gpu::DeviceBuffer<Scalar>(N * H);
    dh_n ? grads.h0.upload(dh_n->data(), N * H) : grads.h0.zero();
    if (lstm) {
      grads.c0 = gpu::DeviceBuffer<Scalar>(N * H);
      dc_n ? grads.c0.upload(dc_n->data(), N * H) : grads.c0.zero();
    }
    grads.kernel = gpu::DeviceBuffer<Scalar>(I * GH);
    grads.recurrent_kernel = gpu::DeviceBuffer<Scalar>(H * GH);
    grads.bias = gpu::DeviceBuffer<Scalar>(run.bias.size());
    grads.peephole = gpu::DeviceBuffer<Scalar>(run.peephole.size());
    backward(grads, dy ? dy_device.data() : nullptr, run);
  }
  py::dict out;
  out["x"] = download(grads.x, {T, N, I});
  out["h0"] = download(grads.h0, {N, H});
  if (lstm) out["c0"] = download(grads.c0, {N, H});
  out["kernel"] = download(grads.kernel, {I, GH});
  out["recurrent_kernel"] = download(grads.recurrent_kernel, {H, GH});
  out["bias"] = download(grads.bias, bias_shape);
  if (lstm) out["peephole"] = P > 0 ? py::object(download(grads.peephole, {P, H})) : py::object(py::none());
  return out;
}

template <typename Scalar>
ForwardArgs<Scalar> common_args(const Args& args, py::handle x_obj, py::handle h0_obj, py::handle kernel_obj,
                                py::handle recurrent_obj, py::handle bias_obj, py::handle lengths_obj, int64_t G,
                                const std::vector<py::ssize_t>& bias_rows) {
  auto x = args.sequence<Scalar>(x_obj);
  const std::string gl = G == 1 ? "H" : std::to_string(G) + "*H";
  const py::ssize_t T = x.shape(0), N = x.shape(1), I = x.shape(2), H = args.hidden_size(recurrent_obj, G, gl.c_str());
  std::vector<Dim> bias_dims;
  for (py::ssize_t rows : bias_rows) bias_dims.push_back({"", rows});
  bias_dims.push_back({gl.c_str(), G * H});
  return {x,
          args.array<Scalar>("h0", h0_obj, {{"N", N}, {"H", H}}),
          args.array<Scalar>("kernel", kernel_obj, {{"I", I}, {gl.c_str(), G * H}}),
          args.array<Scalar>("recurrent_kernel", recurrent_obj, {{"H", H}, {gl.c_str(), G * H}}),
          args.array<Scalar>("bias", bias_obj, bias_dims),
          std::nullopt,
          std::nullopt,
          args.lengths(lengths_obj, T, N)};
}

gpu::Activation parse_activation(const Args& args, const std::string& name) {
  if (name == "tanh") return gpu::Activation::Tanh;
  if (name == "relu") return gpu::Activation::Relu;
  if (name == "sigmoid") return gpu::Activation::Sigmoid;
  args.fail_value("activation is '" + name + "', expected 'tanh', 'relu' or 'sigmoid'");
}

// A backward binding: the cache checked for its cell, then run_backward in the cache's dtype.
py::dict backward_call(const char* function, const char* cell, py::handle dy, py::handle dh_n, py::handle dc_n,
                       py::handle cache_obj) {
  const Args args(function);
  const DeviceCache& cache = device_cache(args, cache_obj, cell);
  if (cache.run32) return run_backward<float>(args, function, cache, dy, dh_n, dc_n);
  return run_backward<double>(args, function, cache, dy, dh_n, dc_n);
}

void bind_cuda_info(py::module_& m) {
  m.def(
      "build_info",
      []() {
        py::dict info;
        info["compiled"] = true;
        info["cuda_runtime"] = std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10);
        info["cublas"] = std::to_string(CUBLAS_VER_MAJOR) + "." + std::to_string(CUBLAS_VER_MINOR) + "." +
                         std::to_string(CUBLAS_VER_PATCH);
        info["architectures"] = RNNEXT_CUDA_ARCHITECTURES;
        int driver = 0;
        if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
        info["driver"] = driver == 0 ? py::object(py::none())
                                     : py::object(py::str(std::to_string(driver / 1000) + "." +
                                                          std::to_string(driver % 1000 / 10)));
        const DeviceQuery query = query_devices();
        py::list devices;
        for (int k = 0; k < query.count; ++k) {
          cudaDeviceProp props{};
          if (cudaGetDeviceProperties(&props, k) == cudaSuccess)
            devices.append(std::string(props.name) + " (sm_" + std::to_string(props.major) +
                           std::to_string(props.minor) + ")");
        }
        info["devices"] = devices;
        info["device_error"] = query.error.empty() ? py::object(py::none()) : py::object(py::str(query.error));
        return info;
      },
      "Facts about the CUDA build and the machine: runtime and cuBLAS versions it was built with, the compiled\n"
      "architectures, the driver and the devices found now (an empty list and device_error when there are none).");
  m.def("device_count", []() { return query_devices().count; }, "CUDA devices found now (0 without a driver).");
}

}  // namespace
}  // namespace rnnext::bindings

PYBIND11_MODULE(_cuda, m) {
  using namespace rnnext::bindings;
  namespace gpu = rnnext::cuda;
  m.doc() = "rnnext CUDA engine: RNN, LSTM and GRU forward and BPTT on an NVIDIA GPU (cuBLAS + fused pointwise "
            "kernels), the CPU engine's conventions (docs/conventions.md, docs/cuda.md).";
  bind_cuda_info(m);

  py::class_<DeviceCache>(m, "DeviceCache",
                          "What a forward pass keeps on the device for its backward pass (inputs, weights, states, "
                          "gates); freed when the object is.")
      .def_property_readonly("cell", [](const DeviceCache& c) { return c.cell; })
      .def_property_readonly("dtype", [](const DeviceCache& c) { return c.run32 ? "float32" : "float64"; })
      .def_property_readonly("dims", [](const DeviceCache& c) {
        const gpu::Dims d = c.dims();
        return py::make_tuple(d.T, d.N, d.I, d.H);
      });

  m.def(
      "rnn_forward",
      [](py::handle x, py::handle h0, py::handle kernel, py::handle recurrent_kernel, py::handle bias,
         py::handle lengths, const std::string& activation, bool keep_cache) {
        const Args args("_cuda.rnn_forward");
        gpu::CellOptions options;
        options.activation = parse_activation(args, activation);
        return with_dtype(args, x, [&](auto scalar) {
          using Scalar = decltype(scalar);
          auto in = common_args<Scalar>(args, x, h0, kernel, recurrent_kernel, bias, lengths, 1, {});
          return run_forward<Scalar>("_cuda.rnn_forward", "rnn", 1, options, in, keep_cache, &gpu::rnn_forward<Scalar>);
        });
      },
      py::arg("x"), py::arg("h0"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("lengths") = py::none(), py::arg("activation") = "tanh", py::arg("keep_cache") = true,
      "rnnext.rnn_forward on the GPU: (y, h_n, DeviceCache or None).");
  m.def(
      "lstm_forward",
      [](py::handle x, py::handle h0, py::handle c0, py::handle kernel, py::handle recurrent_kernel, py::handle bias,
         py::handle peephole, py::handle lengths, bool coupled, bool keep_cache) {
        const Args args("_cuda.lstm_forward");
        gpu::CellOptions options;
        options.peephole = !peephole.is_none();
        options.coupled = coupled;
        const int64_t G = coupled ? 3 : 4;
        return with_dtype(args, x, [&](auto scalar) {
          using Scalar = decltype(scalar);
          auto in = common_args<Scalar>(args, x, h0, kernel, recurrent_kernel, bias, lengths, G, {});
          const py::ssize_t N = in.x.shape(1), H = in.h0.shape(1);
          in.c0 = args.array<Scalar>("c0", c0, {{"N", N}, {"H", H}});
          in.peephole = args.optional_array<Scalar>("peephole", peephole,
                                                    {{coupled ? "P(f,o)" : "P(i,f,o)", coupled ? 2 : 3}, {"H", H}});
          return run_forward<Scalar>("_cuda.lstm_forward", "lstm", G, options, in, keep_cache, &gpu::lstm_forward<Scalar>);
        });
      },
      py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("peephole") = py::none(), py::arg("lengths") = py::none(), py::arg("coupled") = false,
      py::arg("keep_cache") = true, "rnnext.lstm_forward on the GPU: (y, h_n, c_n, DeviceCache or None).");
  m.def(
      "gru_forward",
      [](py::handle x, py::handle h0, py::handle kernel, py::handle recurrent_kernel, py::handle bias,
         py::handle lengths, bool reset_after, bool keep_cache) {
        const Args args("_cuda.gru_forward");
        gpu::CellOptions options;
        options.reset_after = reset_after;
        return with_dtype(args, x, [&](auto scalar) {
          using Scalar = decltype(scalar);
          std::vector<py::ssize_t> rows;
          if (reset_after) rows.push_back(2);
          auto in = common_args<Scalar>(args, x, h0, kernel, recurrent_kernel, bias, lengths, 3, rows);
          return run_forward<Scalar>("_cuda.gru_forward", "gru", 3, options, in, keep_cache, &gpu::gru_forward<Scalar>);
        });
      },
      py::arg("x"), py::arg("h0"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("lengths") = py::none(), py::arg("reset_after") = true, py::arg("keep_cache") = true,
      "rnnext.gru_forward on the GPU: (y, h_n, DeviceCache or None).");

  m.def(
      "rnn_backward",
      [](py::handle dy, py::handle dh_n, py::handle cache) {
        return backward_call("_cuda.rnn_backward", "rnn", dy, dh_n, py::none(), cache);
      },
      py::arg("dy"), py::arg("dh_n"), py::arg("cache"),
      "BPTT of _cuda.rnn_forward from its DeviceCache; dy, dh_n may be None. Gradients keyed x, h0, kernel,\n"
      "recurrent_kernel, bias.");
  m.def(
      "lstm_backward",
      [](py::handle dy, py::handle dh_n, py::handle dc_n, py::handle cache) {
        return backward_call("_cuda.lstm_backward", "lstm", dy, dh_n, dc_n, cache);
      },
      py::arg("dy"), py::arg("dh_n"), py::arg("dc_n"), py::arg("cache"),
      "BPTT of _cuda.lstm_forward from its DeviceCache; dy, dh_n, dc_n may be None. Gradients keyed x, h0, c0,\n"
      "kernel, recurrent_kernel, bias, peephole.");
  m.def(
      "gru_backward",
      [](py::handle dy, py::handle dh_n, py::handle cache) {
        return backward_call("_cuda.gru_backward", "gru", dy, dh_n, py::none(), cache);
      },
      py::arg("dy"), py::arg("dh_n"), py::arg("cache"),
      "BPTT of _cuda.gru_forward from its DeviceCache; dy, dh_n may be None. Gradients keyed x, h0, kernel,\n"
      "recurrent_kernel, bias.");
}

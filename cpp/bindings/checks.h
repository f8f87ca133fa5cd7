// Argument checking and conversion shared by the bindings: every error names the function, the argument
// and the expected shape or dtype, so bad input becomes a Python exception, never a crash. Also the two
// dispatches from run-time choices to template arguments, each made once per call: the dtype and the variant.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <new>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "rnnext/buffer_pool.h"

namespace rnnext::bindings {

namespace py = pybind11;

void bind_info(py::module_& m);
void bind_stepper(py::module_& m);
void bind_rnn(py::module_& m);
void bind_lstm(py::module_& m);
void bind_gru(py::module_& m);
void bind_optim(py::module_& m);
void bind_embedding(py::module_& m);
void bind_dense(py::module_& m);
void bind_losses(py::module_& m);
void bind_layer_norm(py::module_& m);  // layer-normalised cells (bind_layer_norm.cpp)
void bind_projection(py::module_& m);  // LSTM with projection (bind_projection.cpp)

// One expected dimension: its size and how to name it in messages ("N", "4*H", or "" for a plain number).
struct Dim {
  const char* label;
  py::ssize_t size;
};

template <typename Scalar>
using CArray = py::array_t<Scalar, py::array::c_style>;

// The pool's arrays are reported to tracemalloc as NumPy's own are (numpy_trace.cpp).
void trace_numpy_buffer(void* data, size_t bytes);
void untrace_numpy_buffer(void* data);

// A new uninitialised array of `shape`; a large one on a buffer of the BufferPool (rnnext/buffer_pool.h), which
// takes it back when NumPy frees the array, so the next call's array of that size does not fault its pages in.
template <typename Scalar>
CArray<Scalar> new_array(const std::vector<py::ssize_t>& shape) {
  size_t count = 1;
  for (py::ssize_t size : shape) count *= size_t(size);
  const size_t bytes = count * sizeof(Scalar);
  if (!BufferPool::pooled(bytes)) return CArray<Scalar>(shape);
  void* data = BufferPool::instance().acquire(bytes);
  py::capsule owner;
  try {
    owner = py::capsule(data, [](void* buffer) {
      untrace_numpy_buffer(buffer);
      BufferPool::instance().release(buffer);
    });
  } catch (...) {
    BufferPool::instance().release(data);
    throw;
  }
  trace_numpy_buffer(data, bytes);
  return CArray<Scalar>(shape, static_cast<Scalar*>(data), owner);
}

inline std::string shape_string(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t k = 0; k < a.ndim(); ++k) s += (k ? ", " : "") + std::to_string(a.shape(k));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

inline std::string expected_string(const std::vector<Dim>& dims) {
  std::string s = "(";
  for (size_t k = 0; k < dims.size(); ++k) {
    if (k) s += ", ";
    if (dims[k].label[0] != '\0') s += std::string(dims[k].label) + "=";
    s += std::to_string(dims[k].size);
  }
  return s + (dims.size() == 1 ? ",)" : ")");
}

// Checks the arguments of one engine call. The first floating array fixes the dtype of the call.
class Args {
 public:
  explicit Args(const char* function) : function_(function) {}

  [[noreturn]] void fail_value(const std::string& what) const {
    throw py::value_error(std::string(function_) + ": " + what);
  }
  [[noreturn]] void fail_type(const std::string& what) const {
    throw py::type_error(std::string(function_) + ": " + what);
  }

  py::array numpy(const char* name, const py::handle& obj) const {
    if (obj.is_none()) fail_type(std::string(name) + " is None, expected a NumPy array");
    if (!py::isinstance<py::array>(obj))
      fail_type(std::string(name) + " must be a NumPy array, got " + std::string(py::str(py::type::of(obj))));
    return py::reinterpret_borrow<py::array>(obj);
  }

  // Whether the floating arguments of this call are float32 (true) or float64 (false), taken from `obj`.
  bool is_float32(const char* name, const py::handle& obj) const {
    py::array a = numpy(name, obj);
    if (has_dtype<float>(a)) return true;
    if (has_dtype<double>(a)) return false;
    fail_type(std::string(name) + " has dtype " + std::string(py::str(a.dtype())) + ", expected float32 or float64");
  }

  // A dtype counts by what it holds: an IEEE float of Scalar's size in either byte order, with or without
  // metadata. Comparing dtype objects by identity would refuse float32 arrays that came through pickle.
  template <typename Scalar>
  static bool has_dtype(const py::array& a) {
    const py::dtype dtype = a.dtype();
    return dtype.kind() == 'f' && dtype.itemsize() == py::ssize_t(sizeof(Scalar)) && !dtype.has_fields();
  }

  void check_shape(const char* name, const py::array& a, const std::vector<Dim>& dims) const {
    bool ok = a.ndim() == py::ssize_t(dims.size());
    for (size_t k = 0; ok && k < dims.size(); ++k) ok = a.shape(py::ssize_t(k)) == dims[k].size;
    if (!ok) fail_value(std::string(name) + " has shape " + shape_string(a) + ", expected " + expected_string(dims));
  }

  // A C-contiguous, aligned array of the call's dtype and the expected shape, used in place when the input is one.
  // An input in another layout, alignment or byte order is copied; a copy that cannot be allocated raises
  // MemoryError naming the argument.
  template <typename Scalar>
  CArray<Scalar> array(const char* name, const py::handle& obj, const std::vector<Dim>& dims) const {
    py::array a = numpy(name, obj);
    check_dtype<Scalar>(name, a);
    check_shape(name, a, dims);
    const bool aligned = (a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_) != 0;
    if (CArray<Scalar>::check_(a) && aligned) return py::reinterpret_borrow<CArray<Scalar>>(a);
    CArray<Scalar> copy = allocate<Scalar>(name, a);
    copy[py::ellipsis()] = a;  // NumPy's assignment handles strides, broadcasting and byte order
    return copy;
  }

  // An array the call writes into. It is used in place, never copied (the caller would not see a copy's update),
  // so it must already be C-contiguous, aligned, writeable and of the call's dtype in native byte order.
  template <typename Scalar>
  CArray<Scalar> inplace_array(const char* name, const py::handle& obj, const std::vector<Dim>& dims) const {
    py::array a = numpy(name, obj);
    check_dtype<Scalar>(name, a);
    check_shape(name, a, dims);
    const auto flags = a.flags();
    const bool aligned = (flags & py::detail::npy_api::NPY_ARRAY_ALIGNED_) != 0;
    const bool writeable = (flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_) != 0;
    if (!CArray<Scalar>::check_(a) || !aligned || !writeable)
      fail_value(std::string(name) + " is updated in place, so it must be a writeable, aligned, C-contiguous array "
                 "in native byte order");
    return py::reinterpret_borrow<CArray<Scalar>>(a);
  }

  template <typename Scalar>
  void check_dtype(const char* name, const py::array& a) const {
    if (!has_dtype<Scalar>(a))
      fail_type(std::string(name) + " has dtype " + std::string(py::str(a.dtype())) + ", expected " +
                std::string(py::str(py::dtype::of<Scalar>())) + " like the other floating arguments");
  }

  // A new C-contiguous array of a's shape; a failed allocation raises MemoryError naming the argument.
  template <typename Scalar>
  CArray<Scalar> allocate(const char* name, const py::array& a) const {
    const auto fail = [&]() {
      PyErr_SetString(PyExc_MemoryError,
                      (std::string(function_) + ": " + name + " of shape " + shape_string(a) +
                       " needs a C-contiguous copy of " + std::to_string(a.size() * py::ssize_t(sizeof(Scalar))) +
                       " bytes, which could not be allocated")
                          .c_str());
      throw py::error_already_set();
    };
    try {
      return new_array<Scalar>(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
    } catch (const std::bad_alloc&) {  // the buffer pool's
      fail();
    } catch (py::error_already_set& error) {  // NumPy's
      if (!error.matches(PyExc_MemoryError)) throw;
      fail();
    }
    return {};  // not reached: fail() throws
  }

  // An array the call writes into in place (a gradient to accumulate into): it must already be C-contiguous,
  // aligned, writeable and of the call's dtype, since writing into a copy would lose the result.
  template <typename Scalar>
  CArray<Scalar> output_array(const char* name, const py::handle& obj, const std::vector<Dim>& dims) const {
    py::array a = numpy(name, obj);
    if (!has_dtype<Scalar>(a))
      fail_type(std::string(name) + " has dtype " + std::string(py::str(a.dtype())) + ", expected " +
                std::string(py::str(py::dtype::of<Scalar>())) + " like the other floating arguments");
    check_shape(name, a, dims);
    const auto flags = a.flags();
    if (!CArray<Scalar>::check_(a) || (flags & py::detail::npy_api::NPY_ARRAY_ALIGNED_) == 0 ||
        (flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_) == 0)
      fail_value(std::string(name) + " is written in place, so it must be a writeable, C-contiguous, aligned array "
                 "in native byte order");
    return py::reinterpret_borrow<CArray<Scalar>>(a);
  }

  // Like array(), but None is allowed (it stands for zeros or "absent").
  template <typename Scalar>
  std::optional<CArray<Scalar>> optional_array(const char* name, const py::handle& obj,
                                               const std::vector<Dim>& dims) const {
    if (obj.is_none()) return std::nullopt;
    return array<Scalar>(name, obj, dims);
  }

  // lengths: None, or integers [N] with 0 <= lengths[n] <= T; returned as int64. Unsigned values are checked
  // before the cast, so 2**63 and above are reported as they are, not as negative numbers.
  std::optional<CArray<int64_t>> lengths(const py::handle& obj, py::ssize_t T, py::ssize_t N) const {
    if (obj.is_none()) return std::nullopt;
    py::array a;
    try {
      a = py::module_::import("numpy").attr("asarray")(obj);
    } catch (py::error_already_set& error) {
      if (!error.matches(PyExc_ValueError) && !error.matches(PyExc_TypeError) && !error.matches(PyExc_OverflowError))
        throw;
      fail_type(std::string("lengths is not an array of integers [N] (") + error.what() + ")");
    }
    const char kind = a.dtype().kind();
    if (kind != 'i' && kind != 'u')
      fail_type("lengths has dtype " + std::string(py::str(a.dtype())) + ", expected an integer dtype");
    check_shape("lengths", a, {{"N", N}});
    const auto fail_range = [&](py::ssize_t n, const std::string& value) {
      fail_value("lengths[" + std::to_string(n) + "] = " + value + " is out of range [0, T=" + std::to_string(T) +
                 "]");
    };
    if (kind == 'u') {
      auto unsigned_values = CArray<uint64_t>::ensure(a.attr("astype")("uint64"));
      for (py::ssize_t n = 0; n < N; ++n)
        if (unsigned_values.data()[n] > uint64_t(T)) fail_range(n, std::to_string(unsigned_values.data()[n]));
    }
    auto out = CArray<int64_t>::ensure(a.attr("astype")("int64"));
    const int64_t* v = out.data();
    for (py::ssize_t n = 0; n < N; ++n)
      if (v[n] < 0 || v[n] > T) fail_range(n, std::to_string(v[n]));
    return out;
  }

  // x [T, N, I] with T >= 1 and N >= 1.
  template <typename Scalar>
  CArray<Scalar> sequence(const py::handle& obj) const {
    py::array a = numpy("x", obj);
    if (a.ndim() != 3) fail_value("x has shape " + shape_string(a) + ", expected (T, N, I) (time-major)");
    if (a.shape(0) == 0) fail_value("x has shape " + shape_string(a) + ": T=0, an empty sequence; expected T >= 1");
    if (a.shape(1) == 0) fail_value("x has shape " + shape_string(a) + ": N=0, an empty batch; expected N >= 1");
    return array<Scalar>("x", a, {{"T", a.shape(0)}, {"N", a.shape(1)}, {"I", a.shape(2)}});
  }

  // H from recurrent_kernel [H, G*H].
  py::ssize_t hidden_size(const py::handle& recurrent_kernel, py::ssize_t G, const char* gates_label) const {
    py::array u = numpy("recurrent_kernel", recurrent_kernel);
    if (u.ndim() != 2 || u.shape(0) < 1 || u.shape(1) != G * u.shape(0))
      fail_value("recurrent_kernel has shape " + shape_string(u) + ", expected (H, " + gates_label + ") with H >= 1");
    return u.shape(0);
  }

 private:
  const char* function_;
};

// Calls body(Scalar()) with Scalar float or double: the dtype of the call, taken from its first floating
// argument, `name` (x for the cells).
template <typename Body>
decltype(auto) with_dtype(const Args& args, const char* name, const py::handle& first, Body&& body) {
  if (args.is_float32(name, first)) return body(float());
  return body(double());
}
template <typename Body>
decltype(auto) with_dtype(const Args& args, const py::handle& x, Body&& body) {
  return with_dtype(args, "x", x, std::forward<Body>(body));
}

// Calls body(std::integral_constant<type, V>()) for the V among Values equal to `value`, so that a variant
// (a bool option, an activation) becomes a template argument: body(variant) uses decltype(variant)::value.
// The caller has checked `value`; the last of Values is taken when no other matches.
template <auto Value, auto... Rest, typename T, typename Body>
decltype(auto) with_variant(T value, Body&& body) {
  if constexpr (sizeof...(Rest) > 0) {
    if (value != Value) return with_variant<Rest...>(value, std::forward<Body>(body));
  }
  return body(std::integral_constant<decltype(Value), Value>());
}

// A fresh [N, H] copy of `source`, or zeros when it is absent (None was passed). Backward passes use it as
// the carried state gradient, which they overwrite in place.
template <typename Scalar>
CArray<Scalar> copy_or_zeros(const std::optional<CArray<Scalar>>& source, py::ssize_t N, py::ssize_t H) {
  auto out = new_array<Scalar>({N, H});
  if (source) {
    std::copy_n(source->data(), N * H, out.mutable_data());
  } else {
    std::fill_n(out.mutable_data(), N * H, Scalar(0));
  }
  return out;
}

template <typename T>
const T* data_or_null(const std::optional<CArray<T>>& a) {
  return a ? a->data() : nullptr;
}

// The cache argument of a backward pass: the dict its forward call returned.
inline py::dict forward_cache(const Args& args, const py::handle& cache) {
  if (cache.is_none())
    args.fail_value("cache is None: the forward call ran with keep_cache=False, so there is nothing to "
                    "differentiate; run it with keep_cache=True");
  if (!py::isinstance<py::dict>(cache))
    args.fail_type("cache must be the dict returned by the forward call, got " + std::string(py::str(py::type::of(cache))));
  return py::reinterpret_borrow<py::dict>(cache);
}

// Cache entry `key` of a forward pass, checked like any argument.
template <typename Scalar>
CArray<Scalar> cache_entry(const Args& args, const py::dict& cache, const char* key, const std::vector<Dim>& dims) {
  if (!cache.contains(key)) args.fail_value(std::string("cache has no entry '") + key + "'; pass the cache returned by the forward call");
  const std::string name = std::string("cache['") + key + "']";
  return args.array<Scalar>(name.c_str(), cache[key], dims);
}

}  // namespace rnnext::bindings

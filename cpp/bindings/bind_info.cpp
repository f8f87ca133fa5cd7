// Bindings for build facts and thread control.
#include <Eigen/Core>

#include <algorithm>
#include <string>
#include <vector>

#include "bindings/checks.h"
#include "rnnext/buffer_pool.h"
#include "rnnext/common.h"
#include "rnnext/gemm.h"
#include "rnnext/thread_tuner.h"

namespace rnnext::bindings {

namespace {
std::vector<std::string> split_names(const std::string& comma_separated) {
  std::vector<std::string> names;
  std::string::size_type begin = 0;
  while (begin <= comma_separated.size()) {
    const auto end = std::min(comma_separated.find(',', begin), comma_separated.size());
    names.push_back(comma_separated.substr(begin, end - begin));
    begin = end + 1;
  }
  return names;
}
}  // namespace

void bind_info(py::module_& m) {
  m.def(
      "build_info",
      []() {
        py::dict info;
        info["version"] = RNNEXT_VERSION;
        info["eigen_version"] = std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) +
                                "." + std::to_string(EIGEN_MINOR_VERSION);
#ifdef _OPENMP
        info["openmp"] = true;
#else
        info["openmp"] = false;
#endif
        info["num_threads"] = max_threads();
        // This extension's instruction set, and every one that the build compiled (CMakeLists.txt).
        info["isa"] = RNNEXT_ISA;
        py::list isas;
        for (const auto& isa : split_names(RNNEXT_ISAS)) isas.append(isa);
        info["isas"] = isas;
        info["simd"] = std::string(Eigen::SimdInstructionSetsInUse());
        // The targeted instruction sets that choose the micro-kernel (Eigen's string says "AVX" for AVX2 + FMA).
        py::list target_isa;
#ifdef __AVX2__
        target_isa.append("avx2");
#endif
#ifdef __FMA__
        target_isa.append("fma");
#endif
#ifdef __AVX512F__
        target_isa.append("avx512f");
#endif
        info["target_isa"] = target_isa;
        // Which micro-kernel does the matrix products, per dtype (gemm.h).
        py::dict gemm;
        gemm["float32"] = gemm_detail::OwnKernel<float>::name;
        gemm["float64"] = gemm_detail::OwnKernel<double>::name;
        info["gemm_kernel"] = gemm;
        info["cuda"] = false;
#if defined(__clang__)
        info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
        info["compiler"] = std::string("gcc ") + __VERSION__;
#else
        info["compiler"] = "unknown";
#endif
        return info;
      },
      "Facts about this build: Eigen version, OpenMP and its thread count, the instruction set in use and those "
      "compiled, SIMD sets, the targeted AVX2 / FMA / AVX-512 sets, GEMM micro-kernel per dtype, CUDA, compiler.");
  m.def(
      "set_num_threads",
      [](py::handle n_obj) {
        if (n_obj.is_none()) {  // back to the default: the processors (or OMP_NUM_THREADS), tuned per shape
          set_threads(default_threads());
          thread_tuning().store(true, std::memory_order_relaxed);
          return;
        }
        // Any Python integer (or NumPy integer), checked before it can become a C int; bool is not a count.
        if (PyBool_Check(n_obj.ptr()) || !PyIndex_Check(n_obj.ptr()))
          throw py::type_error("set_num_threads: n is " + std::string(py::str(py::type::of(n_obj))) +
                               ", expected an int or None");
        const py::int_ n_int = py::reinterpret_steal<py::int_>(PyNumber_Index(n_obj.ptr()));
        if (!n_int) throw py::error_already_set();
        int overflow = 0;
        const long long n = PyLong_AsLongLongAndOverflow(n_int.ptr(), &overflow);
        const int limit = thread_limit();
        if (overflow != 0 || n < 1 || n > limit)
          throw py::value_error("set_num_threads: n is " + std::string(py::str(n_int)) + ", expected 1 <= n <= " +
                                std::to_string(limit) + " (max_num_threads())");
        set_threads(int(n));
        thread_tuning().store(false, std::memory_order_relaxed);
      },
      py::arg("n"),
      "Use exactly n threads for every engine call in this process, from any Python thread (1 <= n <= "
      "max_num_threads()); None goes back to the default, where each time loop times itself and runs on one "
      "thread or on all of them, whichever is faster now (thread_tuner.h).");
  m.def(
      "thread_tuning", []() { return thread_tuning().load(std::memory_order_relaxed); },
      "Whether the time loops choose their thread count by measurement (until set_num_threads fixes it).");
  // The time loops' choice between one thread and many (thread_tuner.h), for tests that feed it times.
  py::class_<ThreadChooser>(m, "ThreadChooser", py::module_local())
      .def(py::init([](int many) {
             if (many < 1) throw py::value_error("ThreadChooser: many is " + std::to_string(many) + ", expected >= 1");
             return ThreadChooser(many);
           }),
           py::arg("many"))
      .def("choose", &ThreadChooser::choose)
      .def("record", &ThreadChooser::record, py::arg("threads"), py::arg("seconds_per_step"))
      .def("mean", &ThreadChooser::mean, py::arg("threads"))
      .def("tries", &ThreadChooser::tries, py::arg("threads"))
      .def_property_readonly("many", &ThreadChooser::many);
  m.def(
      "set_buffer_pool_limit",
      [](py::ssize_t bytes) {
        if (bytes < 0)
          throw py::value_error("set_buffer_pool_limit: bytes is " + std::to_string(bytes) + ", expected >= 0");
        BufferPool::instance().set_limit(size_t(bytes));
      },
      py::arg("bytes"),
      "Keep at most `bytes` of idle large buffers for reuse by later engine calls (buffer_pool.h; the default is "
      "1 GiB); 0 frees them all now and keeps none from then on.");
  m.def(
      "buffer_pool_stats",
      []() {
        const BufferPool::Stats s = BufferPool::instance().stats();
        py::dict out;
        out["idle_bytes"] = s.idle_bytes;
        out["idle_buffers"] = s.idle_buffers;
        out["in_use_bytes"] = s.in_use_bytes;
        out["in_use_buffers"] = s.in_use_buffers;
        out["limit"] = s.limit;
        out["reused"] = s.reused;
        out["allocated"] = s.allocated;
        return out;
      },
      "The buffer pool's counts: idle and in-use bytes and buffers, its limit, and how many requests were served "
      "by reusing an idle buffer and how many by a new one.");
  m.def("max_num_threads", &thread_limit, "The most threads set_num_threads accepts: 4 per processor.");
  m.def("get_num_threads", &max_threads, "Threads used by engine calls (the same for every Python thread).");
}

}  // namespace rnnext::bindings

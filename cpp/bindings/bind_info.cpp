// Bindings for build facts and thread control.
#include <Eigen/Core>

#include "bindings/checks.h"
#include "rnnext/common.h"
#include "rnnext/gemm.h"

namespace rnnext::bindings {

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
        info["simd"] = std::string(Eigen::SimdInstructionSetsInUse());
        // Which micro-kernel does the matrix products, per dtype (gemm.h).
        py::dict gemm;
        gemm["float32"] = gemm_detail::own_kernel<float> ? "rnnext AVX-512 32x12" : "Eigen GEBP";
        gemm["float64"] = gemm_detail::own_kernel<double> ? "rnnext AVX-512 32x12" : "Eigen GEBP";
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
      "Facts about this build: Eigen version, OpenMP and its thread count, SIMD sets, GEMM micro-kernel per "
      "dtype, CUDA, compiler.");
  m.def(
      "set_num_threads",
      [](int n) {
        if (n < 1) throw py::value_error("set_num_threads: n is " + std::to_string(n) + ", expected n >= 1");
        set_threads(n);
      },
      py::arg("n"), "Use n threads for engine calls made from this Python thread (OpenMP and Eigen).");
  m.def("get_num_threads", &max_threads, "Threads used by engine calls.");
}

}  // namespace rnnext::bindings

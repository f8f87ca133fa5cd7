// rnnext._cpu: what the processor can run, asked before any engine extension is loaded (python/rnnext/_dispatch.py).
// Compiled for the baseline instruction set, so it runs on every processor of its architecture.
// __builtin_cpu_supports also checks that the operating system saves the AVX / AVX-512 registers (XGETBV).
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace {

// The features that the x86-64-v3 (avx2) and x86-64-v4 (avx512) paths may use: the compiler flags of those paths
// let it emit any of them anywhere (CMakeLists.txt).
py::dict processor_features() {
  py::dict features;
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  features["avx"] = bool(__builtin_cpu_supports("avx"));
  features["avx2"] = bool(__builtin_cpu_supports("avx2"));
  features["bmi"] = bool(__builtin_cpu_supports("bmi"));
  features["bmi2"] = bool(__builtin_cpu_supports("bmi2"));
  features["f16c"] = bool(__builtin_cpu_supports("f16c"));
  features["fma"] = bool(__builtin_cpu_supports("fma"));
  features["lzcnt"] = bool(__builtin_cpu_supports("lzcnt"));
  features["movbe"] = bool(__builtin_cpu_supports("movbe"));
  features["avx512f"] = bool(__builtin_cpu_supports("avx512f"));
  features["avx512bw"] = bool(__builtin_cpu_supports("avx512bw"));
  features["avx512cd"] = bool(__builtin_cpu_supports("avx512cd"));
  features["avx512dq"] = bool(__builtin_cpu_supports("avx512dq"));
  features["avx512vl"] = bool(__builtin_cpu_supports("avx512vl"));
#endif
  return features;
}

}  // namespace

PYBIND11_MODULE(_cpu, m) {
  m.doc() = "The processor's instruction-set features and the engine extensions this build compiled.";
  m.def("features", &processor_features,
        "{feature: bool} for the x86-64 features that the engine's paths need (empty on other processors).");
  m.attr("compiled") = py::str(RNNEXT_ISAS).attr("split")(",");
}

// Times rnnext's GEMM (gemm.h's rows_times_weight: the packed operands and micro-kernel of the engine's large
// products) against Eigen's own GEMM on one large square float product, on one thread, after checking that the
// two agree. It is the one way to see Eigen's float rate once the build uses rnnext's own kernel; bench_cells.py
// prints the engine's and torch.mm's rates from Python. Build and run from the repository root:
//   g++ -O3 -march=native -fopenmp -std=c++17 -DEIGEN_DONT_PARALLELIZE -Icpp -I"$(python -c 'import cmeel, os;
//       print(os.path.join(cmeel.__path__[0], "..", "cmeel.prefix", "include", "eigen3"))')" \
//       bench/bench_gemm_kernel.cpp -o /tmp/bench_gemm_kernel && /tmp/bench_gemm_kernel 2048
#include <Eigen/Core>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "rnnext/gemm.h"

namespace {

using Clock = std::chrono::steady_clock;
using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct Timing {
  double median, best;
};

// Median and shortest seconds of `repeats` calls of fn, after one warm-up call (on a shared machine the shortest
// is the one least disturbed by other processes).
template <typename Fn>
Timing time_calls(int repeats, Fn fn) {
  fn();
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    const auto start = Clock::now();
    fn();
    times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return {times[times.size() / 2], times.front()};
}

}  // namespace

int main(int argc, char** argv) {
  const Eigen::Index n = argc > 1 ? std::atol(argv[1]) : 2048;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 5;
  rnnext::set_threads(1);
  std::mt19937 rng(0);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  RowMajor a(n, n), b(n, n), ours(n, n), eigen(n, n);
  for (float* m : {a.data(), b.data()})
    for (Eigen::Index i = 0; i < n * n; ++i) m[i] = uniform(rng);

  const Timing rnnext_s = time_calls(repeats, [&] {
    rnnext::rows_times_weight(ours.data(), n, a.data(), n, n, n, b.data(), n, n, false, nullptr, false);
  });
  const Timing eigen_s = time_calls(repeats, [&] { eigen.noalias() = a * b; });
  const float worst = (ours - eigen).cwiseAbs().maxCoeff() / eigen.cwiseAbs().maxCoeff();
  if (!(worst < 1e-5f)) {
    std::printf("rnnext and Eigen disagree: max |difference| / max |product| = %.2e\n", double(worst));
    return 1;
  }
  const double flops = 2.0 * double(n) * double(n) * double(n);
  std::printf("float32 %ldx%ld . %ldx%ld, 1 thread, %d calls (the products agree to %.1e relative)\n", long(n),
              long(n), long(n), long(n), repeats, double(worst));
  const auto report = [&](const char* name, Timing t) {
    std::printf("  %-28s median %7.1f ms %6.1f GFLOP/s, best %7.1f ms %6.1f GFLOP/s\n", name, 1e3 * t.median,
                flops / t.median / 1e9, 1e3 * t.best, flops / t.best / 1e9);
  };
  report(rnnext::gemm_detail::OwnKernel<float>::name, rnnext_s);
  report("Eigen GEMM (noalias A * B)", eigen_s);
  return 0;
}

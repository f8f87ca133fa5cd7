// Two measurements of the engine's products that Python cannot isolate:
//   1. rnnext's GEMM (gemm.h's rows_times_weight: the packed operands and micro-kernel of the engine's large
//      products) against Eigen's own GEMM on one large square float product, on one thread, after checking that
//      the two agree: the one way to see Eigen's float rate once the build uses rnnext's own kernel
//      (bench_cells.py prints the engine's and torch.mm's rates from Python);
//   2. the recurrent product of an LSTM step for a single sequence (N = 1, gemm.h's GEMV path on the engine's
//      GateColumns, as time_loop.h runs it: pack h, barrier, each thread its unit blocks) as bytes of recurrent
//      weights streamed per second, against a plain streaming read of the same buffer and of one far larger
//      than the caches, on the same threads.
// Build and run from the repository root (arguments: n of the square product, H of the LSTM, threads):
//   g++ -O3 -march=native -fopenmp -std=c++17 -DEIGEN_DONT_PARALLELIZE -Icpp -I"$(python -c 'import cmeel, os;
//       print(os.path.join(cmeel.__path__[0], "..", "cmeel.prefix", "include", "eigen3"))')" \
//       bench/bench_gemm_kernel.cpp -o /tmp/bench_gemm_kernel && /tmp/bench_gemm_kernel 2048 512 2
#include <Eigen/Core>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "rnnext/gemm.h"
#include "rnnext/time_loop.h"

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

// GB/s of reading `floats` floats (a multiple of 64) from `data` `passes` times on `threads` threads, each thread
// a contiguous share, best of 5. The build's widest Eigen packets in four independent sums, so that neither the
// add latency nor the instruction count limits the read.
double streaming_read(const float* data, Eigen::Index floats, int threads, int passes) {
  namespace ei = Eigen::internal;
  using Packet = ei::packet_traits<float>::type;
  constexpr int size = ei::packet_traits<float>::size;
  float sink = 0;
  const Timing t = time_calls(5, [&] {
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    for (int pass = 0; pass < passes; ++pass) {
      Packet sums[4] = {ei::pset1<Packet>(0), ei::pset1<Packet>(0), ei::pset1<Packet>(0), ei::pset1<Packet>(0)};
#pragma omp for schedule(static)
      for (Eigen::Index i = 0; i < floats; i += 4 * size)
        for (int s = 0; s < 4; ++s) sums[s] = ei::padd(sums[s], ei::ploadu<Packet>(data + i + size * s));
      sink += ei::predux(ei::padd(ei::padd(sums[0], sums[1]), ei::padd(sums[2], sums[3])));
    }
  });
  if (sink == 1.2345f) std::printf(" ");  // keeps the sums alive
  return double(passes) * double(floats) * sizeof(float) / t.best / 1e9;
}

// GB/s of recurrent weights [H, 4H] streamed by the recurrent products of `steps` LSTM steps at N = 1.
Timing lstm_vector_steps(Eigen::Index H, int threads, int steps) {
  const Eigen::Index G = 4;
  const rnnext::Dims d{1, 1, H, H};
  std::vector<float> recurrent(size_t(H * G * H), 0.01f), h(size_t(H), 0.5f), z(size_t(G * H), 0.0f);
  rnnext::set_threads(threads);
  const rnnext::TimeLoop loop(d, G, nullptr);
  rnnext::GateColumns<float> U(recurrent.data(), d, G, loop);
  const auto& blocks = loop.blocks();
  return time_calls(5, [&] {
#pragma omp parallel num_threads(threads)
    for (int step = 0; step < steps; ++step) {
      const auto operand = U.operand(h.data(), H);
      operand.packed->pack_share(operand.source, operand.stride, rnnext::thread_id(), rnnext::thread_count());
#pragma omp barrier
#pragma omp for schedule(static)
      for (Eigen::Index b = 0; b < Eigen::Index(blocks.size()); ++b)
        for (Eigen::Index k = 0; k < G; ++k) U.add(z.data() + k * H + blocks[size_t(b)].begin, G * H, b, k);
    }
  });
}

}  // namespace

int main(int argc, char** argv) {
  const Eigen::Index n = argc > 1 ? std::atol(argv[1]) : 2048;
  const Eigen::Index H = argc > 2 ? std::atol(argv[2]) : 512;
  const int threads = argc > 3 ? std::atoi(argv[3]) : 2;
  const int repeats = 5;
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

  const int steps = 200;
  const double weight_bytes = double(4 * H * H) * sizeof(float);
  const Timing gemv = lstm_vector_steps(H, threads, steps);
  std::vector<float> large(size_t(1) << 27, 1.0f);  // 512 MiB: far past the caches
  const double cached = streaming_read(large.data(), 4 * H * H, threads, 50);
  const double memory = streaming_read(large.data(), Eigen::Index(large.size()), threads, 1);
  const double rate = weight_bytes * steps / gemv.best / 1e9;
  std::printf("LSTM N=1 H=%ld recurrent products (%s float32 path, %.1f MiB of weights per step), %d threads:\n",
              long(H), rnnext::gemm_detail::own_kernel<float> ? "rnnext" : "Eigen", weight_bytes / (1 << 20), threads);
  std::printf("  %.2f us per step (best; median %.2f): %.1f GB/s of weights\n", 1e6 * gemv.best / steps,
              1e6 * gemv.median / steps, rate);
  std::printf("  streaming read, same size: %.1f GB/s (the step reaches %.0f%%); 512 MiB: %.1f GB/s (%.0f%%)\n",
              cached, 100 * rate / cached, memory, 100 * rate / memory);
  return 0;
}

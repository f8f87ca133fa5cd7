// The machine's float32 FMA peak: the limit that no GEMM, and so no cell, can pass. Each thread runs 12
// independent chains of vector FMAs (enough to cover the FMA latency on two pipes) on registers only, no memory
// traffic; the best of three runs is printed. AVX-512 where the build targets it, AVX2 + FMA otherwise.
// Build and run from the repository root (the thread count from OMP_NUM_THREADS):
//   g++ -O3 -march=native -fopenmp bench/fma_peak.cpp -o /tmp/fma_peak && OMP_NUM_THREADS=1 /tmp/fma_peak \
//       && OMP_NUM_THREADS=2 /tmp/fma_peak
#include <immintrin.h>
#include <omp.h>

#include <chrono>
#include <cstdio>

#if defined(__AVX512F__)
using Vector = __m512;
constexpr int kLanes = 16;
static Vector broadcast(float v) { return _mm512_set1_ps(v); }
static Vector fma(Vector a, Vector b, Vector c) { return _mm512_fmadd_ps(a, b, c); }
static float lane_sum(Vector v) { return _mm512_reduce_add_ps(v); }
#elif defined(__AVX2__) && defined(__FMA__)
using Vector = __m256;
constexpr int kLanes = 8;
static Vector broadcast(float v) { return _mm256_set1_ps(v); }
static Vector fma(Vector a, Vector b, Vector c) { return _mm256_fmadd_ps(a, b, c); }
static float lane_sum(Vector v) {
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, v);
  float sum = 0;
  for (float lane : lanes) sum += lane;
  return sum;
}
#else
#error "fma_peak needs AVX2 and FMA, or AVX-512 (build with -march=native on such a CPU)"
#endif

int main() {
  constexpr int kChains = 12;
  constexpr long kIterations = 20000000;  // per chain and thread: about 0.1 to 0.3 s
  const int threads = omp_get_max_threads();
  double best = 0;
  for (int run = 0; run < 3; ++run) {
    float sink = 0;  // consumed below, so the chains are not optimised away
    const auto start = std::chrono::steady_clock::now();
#pragma omp parallel reduction(+ : sink)
    {
      Vector chain[kChains];
      for (int i = 0; i < kChains; ++i) chain[i] = broadcast(1e-3f * float(i));
      const Vector scale = broadcast(0.999f), shift = broadcast(1e-4f);
      for (long k = 0; k < kIterations; ++k)
#pragma GCC unroll 12
        for (int i = 0; i < kChains; ++i) chain[i] = fma(chain[i], scale, shift);
      for (int i = 0; i < kChains; ++i) sink += lane_sum(chain[i]);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double gflops = 2.0 * kLanes * kChains * double(kIterations) * threads / seconds * 1e-9;
    if (gflops > best) best = gflops;
    if (sink == 12345.0f) std::printf(" ");
  }
  std::printf("float32 FMA peak, %d thread%s, %d-lane vectors: %.1f GFLOP/s\n", threads, threads == 1 ? "" : "s",
              kLanes, best);
}

// rnnext's own single-precision GEMM micro-kernel for AVX2 + FMA, used by gemm.h in place of Eigen's GEBP when the
// build targets AVX2 and FMA but not AVX-512 (the default -march=native on such a CPU). Its register tile is
// 16 rows (2 x __m256) by 6 columns: 12 accumulators, the 2 A packets and one broadcast B value fill the 16 ymm
// registers (BLIS's Haswell 6x16 shape, transposed for column-major C), enough independent FMAs to cover the FMA
// latency on both pipes. The 16-row panel also divides the time loop's 32-unit blocks (common.h) exactly.
// Packed layouts and the panel loop: kernel_panels.h (kMr = 16, kNr = 6).
#pragma once

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
#define RNNEXT_AVX2_KERNEL 1
#include <immintrin.h>

#include "rnnext/kernel_panels.h"

namespace rnnext::avx2 {

using Index = panels::Index;

struct FloatKernel : panels::PanelKernel<FloatKernel, float, 16, 6> {
  static constexpr const char* name = "rnnext AVX2 16x6";
  // Longest depth chunk: a 6-column panel of B is then 6 KiB (in L1) and a row block of A 128 KiB (in L2).
  static constexpr Index kMaxDepth = 256;
  static constexpr Index kRowBlock = 128;

  // The lanes of packet 0 or 1 of a panel column that hold one of its `rows` valid rows (sign bit set).
  static __m256i row_mask(Index rows, int packet) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(rows) - 8 * packet), lane);
  }

  // The same when A's columns are contiguous: element (i, k) = a[i + k * stride]. Whole vector copies; the
  // masked loads of a last, partial panel read nothing past its valid rows.
  static void pack_a_columns(float* out, Index rows, Index kc, const float* a, Index stride) {
    for (Index p = 0; p < rows; p += kMr) {
      const Index valid = std::min(kMr, rows - p);
      for (Index k = 0; k < kc; ++k, out += kMr) {
        const float* column = a + p + k * stride;
        for (int packet = 0; packet < 2; ++packet)
          _mm256_storeu_ps(out + 8 * packet, valid == kMr
                                                 ? _mm256_loadu_ps(column + 8 * packet)
                                                 : _mm256_maskload_ps(column + 8 * packet, row_mask(valid, packet)));
      }
    }
  }

  // The register tile (kernel_panels.h): rows below 16 are read and written with masks.
  template <int Cols>
  static void tile(Index kc, const float* __restrict a, const float* __restrict b, float* c, Index ldc, Index rows,
                   bool overwrite, const float* row_init) {
    // Every loop over the columns is unrolled in full, the stores at the end too: otherwise GCC keeps the
    // accumulators on the stack and stores all twelve on every k (40% of the rate).
    __m256 low[Cols], high[Cols];
#pragma GCC unroll 6
    for (int j = 0; j < Cols; ++j) low[j] = high[j] = _mm256_setzero_ps();
    for (Index k = 0; k < kc; ++k, a += kMr, b += kNr) {
      const __m256 a_low = _mm256_loadu_ps(a), a_high = _mm256_loadu_ps(a + 8);
#pragma GCC unroll 6
      for (int j = 0; j < Cols; ++j) {
        const __m256 b_j = _mm256_broadcast_ss(b + j);
        low[j] = _mm256_fmadd_ps(a_low, b_j, low[j]);
        high[j] = _mm256_fmadd_ps(a_high, b_j, high[j]);
      }
    }
    // C's own values (or row_init, or zeros) plus the tile's sums: one add per element, whatever C's alignment.
    if (rows == kMr) {
      const __m256 init_low = overwrite && row_init ? _mm256_loadu_ps(row_init) : _mm256_setzero_ps();
      const __m256 init_high = overwrite && row_init ? _mm256_loadu_ps(row_init + 8) : _mm256_setzero_ps();
#pragma GCC unroll 6
      for (int j = 0; j < Cols; ++j) {
        float* column = c + j * ldc;
        _mm256_storeu_ps(column, _mm256_add_ps(overwrite ? init_low : _mm256_loadu_ps(column), low[j]));
        _mm256_storeu_ps(column + 8, _mm256_add_ps(overwrite ? init_high : _mm256_loadu_ps(column + 8), high[j]));
      }
      return;
    }
    const __m256i low_mask = row_mask(rows, 0), high_mask = row_mask(rows, 1);
    const __m256 init_low = overwrite && row_init ? _mm256_maskload_ps(row_init, low_mask) : _mm256_setzero_ps();
    const __m256 init_high = overwrite && row_init ? _mm256_maskload_ps(row_init + 8, high_mask) : _mm256_setzero_ps();
#pragma GCC unroll 6
    for (int j = 0; j < Cols; ++j) {
      float* column = c + j * ldc;
      const __m256 start_low = overwrite ? init_low : _mm256_maskload_ps(column, low_mask);
      const __m256 start_high = overwrite ? init_high : _mm256_maskload_ps(column + 8, high_mask);
      _mm256_maskstore_ps(column, low_mask, _mm256_add_ps(start_low, low[j]));
      _mm256_maskstore_ps(column + 8, high_mask, _mm256_add_ps(start_high, high[j]));
    }
  }
};

}  // namespace rnnext::avx2
#endif

// rnnext's own single-precision GEMM micro-kernel for AVX-512, used by gemm.h in place of Eigen's GEBP when
// the build targets AVX-512 (the default -march=native on such a CPU). Eigen 3.4's float kernel keeps 12
// (3 packets x 4 columns) or, for 32-row operands, 8 accumulators and reached about 80 GFLOP/s per core on
// this project's machine; this one keeps 24 (2 packets x 12 columns) and reaches about 105, three quarters of
// the core's measured FMA peak. Double precision keeps Eigen's kernel; AVX2 builds use kernel_avx2.h.
//
// Packed layouts and the panel loop: kernel_panels.h (kMr = 32, kNr = 12).
#pragma once

#if defined(__AVX512F__)
#define RNNEXT_AVX512_KERNEL 1
#include <immintrin.h>

#include "rnnext/kernel_panels.h"

namespace rnnext::avx512 {

using Index = panels::Index;

struct FloatKernel : panels::PanelKernel<FloatKernel, float, 32, 12> {
  static constexpr const char* name = "rnnext AVX-512 32x12";
  static constexpr Index kMaxDepth = 512;  // longest depth chunk: a 12-column panel of B is then 24 KiB, in L1
  static constexpr Index kRowBlock = 256;  // rows of A that stream past one panel of B (in L2)

  // Masks of the valid rows among a panel's low and high 16.
  static __mmask16 low_rows(Index rows) { return rows >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << rows) - 1); }
  static __mmask16 high_rows(Index rows) {
    return rows >= 32 ? __mmask16(0xFFFF) : rows <= 16 ? __mmask16(0) : __mmask16((1u << (rows - 16)) - 1);
  }

  // The same when A's columns are contiguous: element (i, k) = a[i + k * stride]. Whole vector copies.
  static void pack_a_columns(float* out, Index rows, Index kc, const float* a, Index stride) {
    for (Index p = 0; p < rows; p += kMr) {
      const Index valid = std::min(kMr, rows - p);
      const __mmask16 low_mask = low_rows(valid), high_mask = high_rows(valid);
      for (Index k = 0; k < kc; ++k, out += kMr) {
        const float* column = a + p + k * stride;
        _mm512_store_ps(out, _mm512_maskz_loadu_ps(low_mask, column));
        _mm512_store_ps(out + 16, _mm512_maskz_loadu_ps(high_mask, column + 16));
      }
    }
  }

  // B's columns contiguous along the depth (kernel_panels.h's pack_b_columns) in 16 x 16 register transposes:
  // 12 columns of 16 depth values in, 16 depth rows of a panel out. About 3 to 4x faster than the element-wise
  // copy, which the time loop pays for every step's operand (h[t] or dz[t]). Copies only: the same layout.
  static void pack_b_columns(float* out, Index first, Index last, Index kc, const float* b, Index stride) {
    static_assert(kNr <= 16, "a panel's columns are lanes of one transposed vector");
    constexpr __mmask16 panel_lanes = __mmask16((1u << kNr) - 1);
    for (Index q = first; q < last; q += kNr) {
      const Index valid = std::min(kNr, last - q);
      float* panel = out + q * kc;
      const float* columns = b + q * stride;
      for (Index k = 0; k < kc; k += 16) {
        const Index depth = std::min<Index>(16, kc - k);
        const __mmask16 rows = depth == 16 ? __mmask16(0xFFFF) : __mmask16((1u << depth) - 1);
        __m512 r[16];
        for (Index j = 0; j < 16; ++j)
          r[j] = j < valid ? _mm512_maskz_loadu_ps(rows, columns + j * stride + k) : _mm512_setzero_ps();
        transpose16(r);
        for (Index i = 0; i < depth; ++i) _mm512_mask_storeu_ps(panel + (k + i) * kNr, panel_lanes, r[i]);
      }
    }
  }

  // r[j] lane k becomes r[k] lane j: pairs of rows interleaved, then groups of four within 128-bit lanes, then
  // the 128-bit lanes of four vectors.
  static void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; ++i) {
      t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {  // r[4i + c], 128-bit lane L: rows 4i .. 4i+3 at depth 4L + c
      r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
      r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
      r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
      r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int c = 0; c < 4; ++c) {  // a 4 x 4 transposition of 128-bit lanes among r[c], r[4+c], r[8+c], r[12+c]
      const __m512 s0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88), s1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xDD);
      const __m512 s2 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
      const __m512 s3 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xDD);
      t[c] = _mm512_shuffle_f32x4(s0, s2, 0x88);
      t[4 + c] = _mm512_shuffle_f32x4(s1, s3, 0x88);
      t[8 + c] = _mm512_shuffle_f32x4(s0, s2, 0xDD);
      t[12 + c] = _mm512_shuffle_f32x4(s1, s3, 0xDD);
    }
    for (int i = 0; i < 16; ++i) r[i] = t[i];
  }

  // The register tile (kernel_panels.h): rows below 32 are written with masks.
  template <int Cols>
  static void tile(Index kc, const float* __restrict a, const float* __restrict b, float* c, Index ldc, Index rows,
                   bool overwrite, const float* row_init) {
    __m512 low[Cols], high[Cols];
    for (int j = 0; j < Cols; ++j) low[j] = high[j] = _mm512_setzero_ps();
    for (Index k = 0; k < kc; ++k, a += kMr, b += kNr) {
      const __m512 a_low = _mm512_load_ps(a), a_high = _mm512_load_ps(a + 16);
#pragma GCC unroll 12
      for (int j = 0; j < Cols; ++j) {
        const __m512 b_j = _mm512_set1_ps(b[j]);
        low[j] = _mm512_fmadd_ps(a_low, b_j, low[j]);
        high[j] = _mm512_fmadd_ps(a_high, b_j, high[j]);
      }
    }
    const __mmask16 low_mask = low_rows(rows), high_mask = high_rows(rows);
    if (overwrite) {
      const __m512 init_low = row_init ? _mm512_maskz_loadu_ps(low_mask, row_init) : _mm512_setzero_ps();
      const __m512 init_high = row_init ? _mm512_maskz_loadu_ps(high_mask, row_init + 16) : _mm512_setzero_ps();
      for (int j = 0; j < Cols; ++j) {
        float* column = c + j * ldc;
        _mm512_mask_storeu_ps(column, low_mask, _mm512_add_ps(init_low, low[j]));
        _mm512_mask_storeu_ps(column + 16, high_mask, _mm512_add_ps(init_high, high[j]));
      }
      return;
    }
    for (int j = 0; j < Cols; ++j) {
      float* column = c + j * ldc;
      _mm512_mask_storeu_ps(column, low_mask, _mm512_add_ps(_mm512_maskz_loadu_ps(low_mask, column), low[j]));
      _mm512_mask_storeu_ps(column + 16, high_mask,
                            _mm512_add_ps(_mm512_maskz_loadu_ps(high_mask, column + 16), high[j]));
    }
  }
};

}  // namespace rnnext::avx512
#endif

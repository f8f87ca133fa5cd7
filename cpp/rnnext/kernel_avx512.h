// rnnext's own single-precision GEMM micro-kernel for AVX-512, used by gemm.h in place of Eigen's GEBP when
// the build targets AVX-512 (the default -march=native on such a CPU). Eigen 3.4's float kernel keeps 12
// (3 packets x 4 columns) or, for 32-row operands, 8 accumulators and reached about 80 GFLOP/s per core on
// this project's machine; this one keeps 24 (2 packets x 12 columns) and reaches about 105, three quarters of
// the core's measured FMA peak. Double precision and other instruction sets keep Eigen's kernel.
//
// Packed layouts (one depth chunk of kc):
//   A [rows, kc]: panels of kMr = 32 rows, each stored k-major ([kc][32]), the last panel padded with zeros;
//   B [kc, cols]: panels of kNr = 12 columns, each stored k-major ([kc][12]), the last panel padded with zeros.
// C += A . B is column-major (element (i, j) at c[i + j * ldc]).
#pragma once

#if defined(__AVX512F__)
#define RNNEXT_AVX512_KERNEL 1
#include <immintrin.h>

#include <Eigen/Core>

namespace rnnext {
namespace avx512 {

using Index = Eigen::Index;
constexpr Index kMr = 32;
constexpr Index kNr = 12;
constexpr Index kMaxDepth = 512;  // longest depth chunk: a 12-column panel of B is then 24 KiB, in L1

// Masks of the valid rows among a panel's low and high 16.
inline __mmask16 low_rows(Index rows) { return rows >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << rows) - 1); }
inline __mmask16 high_rows(Index rows) {
  return rows >= 32 ? __mmask16(0xFFFF) : rows <= 16 ? __mmask16(0) : __mmask16((1u << (rows - 16)) - 1);
}

// Packs A [rows, kc] into panels of kMr rows, when A's rows are contiguous: element (i, k) = a[i * stride + k].
// Each row is read in order and written with a stride of one panel row.
inline void pack_a_rows(float* out, Index rows, Index kc, const float* a, Index stride) {
  for (Index p = 0; p < rows; p += kMr, out += kMr * kc) {
    const Index valid = std::min(kMr, rows - p);
    for (Index i = 0; i < kMr; ++i) {
      const float* row = a + (p + i) * stride;
      if (i < valid) {
        for (Index k = 0; k < kc; ++k) out[k * kMr + i] = row[k];
      } else {
        for (Index k = 0; k < kc; ++k) out[k * kMr + i] = 0.0f;
      }
    }
  }
}

// The same when A's columns are contiguous: element (i, k) = a[i + k * stride]. Whole vector copies.
inline void pack_a_columns(float* out, Index rows, Index kc, const float* a, Index stride) {
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

// Packs the columns [first, last) of B [kc, cols] (first a multiple of kNr) into panels of kNr columns, at
// their place in the packed buffer `out` of all columns. element(k, j) reads the source.
template <typename Element>
void pack_b(float* out, Index first, Index last, Index kc, Element element) {
  for (Index q = first; q < last; q += kNr) {
    const Index valid = std::min(kNr, last - q);
    float* panel = out + q * kc;
    for (Index k = 0; k < kc; ++k, panel += kNr) {
      Index j = 0;
      for (; j < valid; ++j) panel[j] = element(k, q + j);
      for (; j < kNr; ++j) panel[j] = 0.0f;
    }
  }
}

// C [rows <= 32, Cols] += A panel . B panel over kc, or, when `overwrite`, C = A panel . B panel + row_init
// (one value per row of the panel; zeros when null), so a first depth chunk need not read C. Cols is a template
// parameter so the accumulators stay in registers; rows below 32 are written with masks.
template <int Cols>
inline void micro_kernel(Index kc, const float* __restrict a, const float* __restrict b, float* c, Index ldc,
                         Index rows, bool overwrite, const float* row_init) {
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

// C [rows, cols] += A . B for one depth chunk of packed operands (a: all row panels, b: all column panels), or
// C = A . B + row_init when `overwrite` (see micro_kernel). Each column panel of B stays in L1 while a block of
// kRowBlock rows of A (in L2) streams past it.
constexpr Index kRowBlock = 256;

inline void multiply_add(float* c, Index ldc, const float* a, const float* b, Index rows, Index cols, Index kc,
                         bool overwrite = false, const float* row_init = nullptr) {
  for (Index block = 0; block < rows; block += kRowBlock)
  for (Index q = 0; q < cols; q += kNr) {
    const float* b_panel = b + q * kc;
    const Index width = std::min(kNr, cols - q);
    for (Index p = block; p < std::min(rows, block + kRowBlock); p += kMr) {
      const float* a_panel = a + p * kc;
      float* tile = c + p + q * ldc;
      const Index height = std::min(kMr, rows - p);
      const float* init = row_init ? row_init + p : nullptr;
      switch (width) {
        case 12: micro_kernel<12>(kc, a_panel, b_panel, tile, ldc, height, overwrite, init); break;
        case 11: micro_kernel<11>(kc, a_panel, b_panel, tile, ldc, height, overwrite, init); break;
        case 10: micro_kernel<10>(kc, a_panel, b_panel, tile, ldc, height, overwrite, init); break;
        case 9: micro_kernel<9>(kc, a_panel, b_panel, tile, ldc, height, overwrite, init); break;
        case 8: micro_kernel<8>(kc, a_panel, b_panel, tile, ldc, height, overwrite, init); break;
        case 7: micro_kernel<7>(kc, a_panel, b_panel, tile, ldc, height, overwrite, init); break;
        case 6: micro_kernel<6>(kc, a_panel, b_panel, tile, ldc, height, overwrite, init); break;
        case 5: micro_kernel<5>(kc, a_panel, b_panel, tile, ldc, height, overwrite, init); break;
        case 4: micro_kernel<4>(kc, a_panel, b_panel, tile, ldc, height, overwrite, init); break;
        case 3: micro_kernel<3>(kc, a_panel, b_panel, tile, ldc, height, overwrite, init); break;
        case 2: micro_kernel<2>(kc, a_panel, b_panel, tile, ldc, height, overwrite, init); break;
        default: micro_kernel<1>(kc, a_panel, b_panel, tile, ldc, height, overwrite, init); break;
      }
    }
  }
}

}  // namespace avx512
}  // namespace rnnext
#endif

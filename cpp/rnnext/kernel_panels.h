// The packed layouts and the panel loop shared by rnnext's own GEMM micro-kernels (kernel_avx2.h,
// kernel_avx512.h): each kernel supplies only its panel shape, blocking, a vector copy of contiguous columns of A
// and its register tile; everything here is plain C++, so it compiles for any instruction set.
//
// Packed layouts (one depth chunk of kc), for a kernel with an Mr x Nr register tile:
//   A [rows, kc]: panels of Mr rows, each stored k-major ([kc][Mr]), the last panel padded with zeros;
//   B [kc, cols]: panels of Nr columns, each stored k-major ([kc][Nr]), the last panel padded with zeros.
// C += A . B is column-major (element (i, j) at c[i + j * ldc]).
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <type_traits>
#include <utility>

namespace rnnext::panels {

using Index = Eigen::Index;

// Calls body(std::integral_constant<int, width>{}) for 1 <= width <= Nr, so that a tile's column count is a
// compile-time constant and its accumulators stay in registers.
template <int Nr, typename Body, int... Widths>
void with_width(Index width, Body& body, std::integer_sequence<int, Widths...>) {
  ((width == Widths + 1 ? (body(std::integral_constant<int, Widths + 1>{}), true) : false) || ...);
}
template <int Nr, typename Body>
void with_width(Index width, Body&& body) {
  with_width<Nr>(width, body, std::make_integer_sequence<int, Nr>{});
}

// What every kernel shares, for its struct to inherit (Kernel is that struct): the panel shape, the packing that
// needs no vector instructions, and the multiply_add entry over all panels. Kernel adds kMaxDepth, kRowBlock,
// pack_a_columns and its register tile, Kernel::tile<Cols>(kc, a_panel, b_panel, c, ldc, rows, overwrite,
// row_init): C [rows <= Mr, Cols] += A panel . B panel over kc, or, when `overwrite`, C = A panel . B panel +
// row_init (one value per row of the panel; zeros when null), so a first depth chunk need not read C.
template <typename Kernel, typename ScalarType, Index Mr, Index Nr>
struct PanelKernel {
  using Scalar = ScalarType;
  static constexpr Index kMr = Mr, kNr = Nr;

  // Packs A [rows, kc] into panels of Mr rows, when A's rows are contiguous: element (i, k) = a[i * stride + k].
  // Each row is read in order and written with a stride of one panel row, kSpan columns of a panel at a time, so
  // the lines being written (kSpan x Mr values) stay in L1 (the whole panel's depth at once did not: about 3x
  // slower at kc = 512). The values are copies: the layout, and so every result, is the same.
  static void pack_a_rows(Scalar* out, Index rows, Index kc, const Scalar* a, Index stride) {
    constexpr Index kSpan = 16;
    for (Index p = 0; p < rows; p += Mr, out += Mr * kc) {
      const Index valid = std::min(Mr, rows - p);
      for (Index k0 = 0; k0 < kc; k0 += kSpan) {
        const Index k1 = std::min(kc, k0 + kSpan);
        for (Index i = 0; i < Mr; ++i) {
          const Scalar* row = a + (p + i) * stride;
          if (i < valid) {
            for (Index k = k0; k < k1; ++k) out[k * Mr + i] = row[k];
          } else {
            for (Index k = k0; k < k1; ++k) out[k * Mr + i] = Scalar(0);
          }
        }
      }
    }
  }

  // Packs the columns [first, last) of B [kc, cols] (first a multiple of Nr) into panels of Nr columns, at
  // their place in the packed buffer `out` of all columns. element(k, j) reads the source.
  template <typename Element>
  static void pack_b(Scalar* out, Index first, Index last, Index kc, Element element) {
    for (Index q = first; q < last; q += Nr) {
      const Index valid = std::min(Nr, last - q);
      Scalar* panel = out + q * kc;
      for (Index k = 0; k < kc; ++k, panel += Nr) {
        Index j = 0;
        for (; j < valid; ++j) panel[j] = element(k, q + j);
        for (; j < Nr; ++j) panel[j] = Scalar(0);
      }
    }
  }

  // The same when B's columns are contiguous along the depth: element (k, j) = b[k + j * stride] (a row-major
  // step buffer, one row per column). A kernel may replace this with a vector version; the layout is the same.
  static void pack_b_columns(Scalar* out, Index first, Index last, Index kc, const Scalar* b, Index stride) {
    pack_b(out, first, last, kc, [&](Index k, Index j) { return b[k + j * stride]; });
  }

  // C [rows, cols] += A . B for one depth chunk of packed operands (a: all row panels, b: all column panels), or
  // C = A . B + row_init when `overwrite`. Each column panel of B stays in L1 while a block of kRowBlock rows of A
  // (in L2) streams past it. Every C element is one tile's sum over k in order, so the result depends neither
  // on how rows or columns are blocked nor on any address.
  static void multiply_add(Scalar* c, Index ldc, const Scalar* a, const Scalar* b, Index rows, Index cols, Index kc,
                           bool overwrite = false, const Scalar* row_init = nullptr) {
    constexpr Index RowBlock = Kernel::kRowBlock;
    static_assert(RowBlock % Mr == 0, "a row block is a whole number of panels");
    for (Index block = 0; block < rows; block += RowBlock)
      for (Index q = 0; q < cols; q += Nr) {
        const Scalar* b_panel = b + q * kc;
        for (Index p = block; p < std::min(rows, block + RowBlock); p += Mr) {
          const Scalar* a_panel = a + p * kc;
          Scalar* tile = c + p + q * ldc;
          const Index height = std::min(Mr, rows - p);
          const Scalar* init = row_init ? row_init + p : nullptr;
          with_width<int(Nr)>(std::min(Nr, cols - q), [&](auto width) {
            Kernel::template tile<decltype(width)::value>(kc, a_panel, b_panel, tile, ldc, height, overwrite, init);
          });
        }
      }
  }
};

}  // namespace rnnext::panels

// Row-wise pieces shared by the dense layer (dense.h) and the losses (losses.h): an exp whose every element
// takes the same SIMD path, and sums in a fixed order. Both give the same bits whatever a buffer's alignment,
// so a row's result never depends on where the row lies in memory or which thread computes it.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>

#include "rnnext/common.h"

namespace rnnext {

namespace row_detail {
namespace ei = Eigen::internal;
template <typename Scalar>
using Packet = typename ei::packet_traits<Scalar>::type;
template <typename Scalar>
constexpr Index packet_size = ei::unpacket_traits<Packet<Scalar>>::size;
template <typename Scalar>
constexpr bool packet_exp = ei::packet_traits<Scalar>::Vectorizable && ei::packet_traits<Scalar>::HasExp;

// Below this the packet exp clamps its argument and would return about 3e-39 (float) or 1e-308 (double) for any
// smaller one, -inf included; those elements are set to 0 instead (std::exp is at most a subnormal number there).
template <typename Scalar>
constexpr Scalar exp_floor() {
  return std::is_same_v<Scalar, float> ? Scalar(-88.72) : Scalar(-709.78);
}

template <typename Scalar>
Packet<Scalar> exp_packet(const Packet<Scalar>& x) {
  const Packet<Scalar> result = ei::pexp(x);
  const Packet<Scalar> underflow = ei::pcmp_lt(x, ei::pset1<Packet<Scalar>>(exp_floor<Scalar>()));
  return ei::pandnot(result, underflow);
}
}  // namespace row_detail

// out[k] = exp(in[k] - shift) for k < n; out may be in. Every element, the last partial packet's too, goes
// through Eigen's packet exp (a few ulp), so the result of an element depends on its value only. Where the
// scalar type has no packet exp, std::exp does every element.
template <typename Scalar>
void exp_shifted(Scalar* out, const Scalar* in, Index n, Scalar shift) {
  using namespace row_detail;
  if constexpr (packet_exp<Scalar>) {
    constexpr Index P = packet_size<Scalar>;
    const Packet<Scalar> s = ei::pset1<Packet<Scalar>>(shift);
    Index k = 0;
    for (; k + P <= n; k += P)
      ei::pstoreu(out + k, exp_packet<Scalar>(ei::psub(ei::ploadu<Packet<Scalar>>(in + k), s)));
    if (k < n) {
      Scalar tail[P];
      std::fill_n(tail, P, shift);
      std::copy(in + k, in + n, tail);
      ei::pstoreu(tail, exp_packet<Scalar>(ei::psub(ei::ploadu<Packet<Scalar>>(tail), s)));
      std::copy_n(tail, n - k, out + k);
    }
  } else {
    for (Index k = 0; k < n; ++k) out[k] = std::exp(in[k] - shift);
  }
}

// The largest of v[0..n) (n >= 1). A NaN may or may not be returned; callers let NaN reach their sums instead.
template <typename Scalar>
Scalar row_max(const Scalar* v, Index n) {
  return ConstVectorMap<Scalar>(v, n).maxCoeff();  // exact in any order
}

// Sums in double of v[k] (sum_in_double) or u[k] * v[k] (dot_in_double) for k < n, in kLanes interleaved
// partial sums combined pairwise: a fixed order that the compiler can still vectorise. lane_sum calls term(k)
// once for each k, in increasing order, so a term may also write an output element.
constexpr Index kLanes = 8;

template <typename Term>
double lane_sum(Index n, Term term) {
  double lanes[kLanes] = {};
  Index k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (Index l = 0; l < kLanes; ++l) lanes[l] += term(k + l);
  for (Index l = 0; k + l < n; ++l) lanes[l] += term(k + l);
  for (Index width = kLanes / 2; width > 0; width /= 2)
    for (Index l = 0; l < width; ++l) lanes[l] += lanes[l + width];
  return lanes[0];
}

template <typename Scalar>
double sum_in_double(const Scalar* v, Index n) {
  return lane_sum(n, [v](Index k) { return double(v[k]); });
}

template <typename Scalar>
double dot_in_double(const Scalar* u, const Scalar* v, Index n) {
  return lane_sum(n, [u, v](Index k) { return double(u[k]) * double(v[k]); });
}

// Rows per work item of the row-wise passes (a fixed size, though how rows are grouped changes no result: each
// row is computed by one thread on its own).
constexpr Index kRowsPerItem = 64;

// Transcendental functions cost tens of flops per element, which decides whether a pass is worth threads.
constexpr double kPointwiseCost = 20.0;

// Runs body(row) for rows [0, M), each costing about `cost_per_row` flops, on the engine's threads when that pays.
template <typename Body>
void for_each_row(Index M, double cost_per_row, Body body) {
  parallel_chunks(chunk_count(M, kRowsPerItem), double(M) * cost_per_row, [&](Index chunk) {
    const Index first = chunk * kRowsPerItem, last = std::min(M, first + kRowsPerItem);
    for (Index row = first; row < last; ++row) body(row);
  });
}

}  // namespace rnnext

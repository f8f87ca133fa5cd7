// Embedding lookup: the forward gather of table rows by id, and the backward scatter-add of the output gradients
// into the rows of the table's gradient. Letters: V table rows (vocabulary), D row size, K ids (all ids of a
// call, flattened in C order).
//
// The backward adds into each row in id order (k = 0, 1, ...), the order np.add.at uses, whatever the thread
// count: the table's rows are dealt out to the threads, and every thread scans all ids but adds only into the
// rows it owns. A row's sum is thus always formed by one thread in the same order, so results are bitwise the
// same for any number of threads (and the same as np.add.at's).
#pragma once

#include "rnnext/common.h"
#include "rnnext/gemm.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace rnnext {

// The two passes' names for their thread choice (thread_tuner.h).
template <typename Scalar>
struct EmbeddingGather {};
template <typename Scalar>
struct EmbeddingScatter {};

// y[k] = table[ids[k]]. The caller has checked 0 <= ids[k] < V.
template <typename Scalar>
void embedding_forward(Scalar* y /* [K, D] */, const Scalar* table /* [V, D] */, const int64_t* ids /* [K] */,
                       Index K, Index D) {
  const TimedRun timed(typeid(EmbeddingGather<Scalar>), D, 0, K, K * D >= kParallelElements ? max_threads() : 1);
#pragma omp parallel for schedule(static) num_threads(timed.threads()) if (timed.threads() > 1)
  for (Index k = 0; k < K; ++k) std::memcpy(y + k * D, table + ids[k] * D, size_t(D) * sizeof(Scalar));
}

// Rows per unit of ownership: enough that two threads never write into one cache line (64 bytes).
template <typename Scalar>
Index rows_per_owner_group(Index D) {
  const Index row_bytes = D * Index(sizeof(Scalar));
  return std::max<Index>(1, (64 + row_bytes - 1) / row_bytes);
}

// table_grad[ids[k]] += dy[k] for every k with ids[k] != padding_idx, in k order per row. ACCUMULATES, like the
// layers' backward passes (the cells' engine backward assigns instead). padding_idx < 0: no padding row.
template <typename Scalar>
void embedding_backward(Scalar* table_grad /* [V, D] */, const Scalar* dy /* [K, D] */, const int64_t* ids /* [K] */,
                        Index K, Index D, int64_t padding_idx) {
  const Index group = rows_per_owner_group<Scalar>(D);
  const TimedRun timed(typeid(EmbeddingScatter<Scalar>), D, 0, K, K * D >= kParallelElements ? max_threads() : 1);
#pragma omp parallel num_threads(timed.threads()) if (timed.threads() > 1)
  {
    // Rows are dealt out in groups, round robin: frequent ids (small ones, in most vocabularies) spread over all
    // threads instead of piling onto the owner of the first rows.
    const Index threads = thread_count(), me = thread_id();
    for (Index k = 0; k < K; ++k) {
      const int64_t row = ids[k];
      if (row == padding_idx || (row / group) % threads != me) continue;
      Scalar* out = table_grad + row * D;
      const Scalar* in = dy + k * D;
      for (Index d = 0; d < D; ++d) out[d] += in[d];
    }
  }
}

}  // namespace rnnext

// The engine's Python module, one bind_* function per concept. CMake compiles it once per instruction set as
// rnnext._core_<isa> (RNNEXT_MODULE); python/rnnext/_core.py re-exports the one chosen at import.
#include "bindings/checks.h"
#include "bindings/scan_checks.h"

PYBIND11_MODULE(RNNEXT_MODULE, m) {
  m.doc() = "rnnext engine: Eigen recurrent cells (RNN, LSTM, GRU) with forward and BPTT, the dense layer and the "
            "losses. See docs/conventions.md.";
  rnnext::bindings::bind_info(m);
  rnnext::bindings::bind_stepper(m);
  rnnext::bindings::bind_rnn(m);
  rnnext::bindings::bind_lstm(m);
  rnnext::bindings::bind_gru(m);
  rnnext::bindings::bind_optim(m);
  rnnext::bindings::bind_embedding(m);
  rnnext::bindings::bind_dense(m);
  rnnext::bindings::bind_losses(m);
  rnnext::bindings::bind_indrnn(m);
  rnnext::bindings::bind_min_cells(m);
  rnnext::bindings::bind_sru(m);
  rnnext::bindings::bind_qrnn(m);
  rnnext::bindings::bind_layer_norm(m);
  rnnext::bindings::bind_projection(m);
}

"""Plain NumPy twins of the engine kernels: the readable definition the C++ engine is tested and timed against.

Same names, argument order, defaults, outputs and cache keys as `rnnext._core` (see docs/conventions.md).
The cells loop over time steps in Python and work on the whole batch at each step; Dense, the losses, the
optimizer updates and the Embedding are whole-array NumPy. One module per engine header: cells, dense, losses,
optim, embedding (and _common, the activations and argument checks they share). Nothing here is fast, everything here is meant to be read next to the
equations. Arrays stay in the dtype of `x` (of the first floating argument for the losses).

Letters: T time steps, N batch rows, I input size, H hidden size. Weight names say which way they map:
`W_xh` takes the input to the hidden state, `W_hz` takes the hidden state to the LSTM gate pre-activations.
"""
from .cells import gru_backward, gru_forward, lstm_backward, lstm_forward, rnn_backward, rnn_forward
from .dense import dense_backward, dense_forward
from .embedding import embedding_backward, embedding_forward
from .losses import binary_cross_entropy_with_logits, mean_squared_error, softmax_cross_entropy
from .scan_cells import (indrnn_backward, indrnn_forward, mingru_backward, mingru_forward, minlstm_backward,
                         minlstm_forward, qrnn_backward, qrnn_forward, sru_backward, sru_forward)
from .optim import (adagrad_update, adam_update, clip_grad_norm, clip_grad_value, grad_norm, rmsprop_update,
                    sgd_update, zero_grads)

__all__ = ["rnn_forward", "rnn_backward", "lstm_forward", "lstm_backward", "gru_forward", "gru_backward",
           "dense_forward", "dense_backward", "softmax_cross_entropy", "binary_cross_entropy_with_logits",
           "mean_squared_error", "sgd_update", "adagrad_update", "rmsprop_update", "adam_update", "grad_norm",
           "clip_grad_norm", "clip_grad_value", "zero_grads", "embedding_forward", "embedding_backward", "indrnn_forward", "indrnn_backward",
           "mingru_forward", "mingru_backward", "minlstm_forward", "minlstm_backward", "sru_forward", "sru_backward",
           "qrnn_forward", "qrnn_backward"]

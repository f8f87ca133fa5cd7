# Type stub for rnnext._core, the C++ engine (cpp/bindings). Letters as in docs/conventions.md: T steps, N rows,
# I input size, H hidden size; arrays are float32 or float64, one dtype per call, taken from the first floating
# argument (x for the cells and Dense).
from typing import Literal, Optional, Sequence, SupportsIndex, TypedDict

import numpy as np
from numpy.typing import ArrayLike, NDArray

Float = NDArray[np.floating]

class BuildInfo(TypedDict):
    version: str
    eigen_version: str
    openmp: bool
    num_threads: int
    isa: str                        # the instruction-set path in use: "sse2", "avx2", "avx512", "neon", "native", ...
    isas: list[str]                 # the paths this build compiled, most portable first
    simd: str
    target_isa: list[str]           # of "avx2", "fma", "avx512f": the sets that choose the GEMM micro-kernel
    gemm_kernel: dict[str, str]
    cuda: bool
    compiler: str

def build_info() -> BuildInfo: ...
def get_num_threads() -> int: ...
def set_num_threads(n: SupportsIndex | None) -> None: ...  # None: the default, each time loop's count tuned
def max_num_threads() -> int: ...
def thread_tuning() -> bool: ...
def set_buffer_pool_limit(bytes: int) -> None: ...  # the most idle bytes kept for reuse (buffer_pool.h)
def buffer_pool_stats() -> dict[str, int]: ...  # idle/in-use bytes and buffers, limit, reused, allocated

# The time loops' choice between one thread and `many`, from the times recorded for each (thread_tuner.h).
class ThreadChooser:
    def __init__(self, many: int) -> None: ...
    @property
    def many(self) -> int: ...
    def choose(self) -> int: ...
    def record(self, threads: int, seconds_per_step: float) -> None: ...
    def mean(self, threads: int) -> float: ...
    def tries(self, threads: int) -> int: ...

# Forward passes return (y [T, N, H], h_n [N, H][, c_n [N, H]], cache); the cache goes to the matching backward.
# Backward passes return gradients keyed by argument name (x, h0[, c0], kernel, recurrent_kernel, bias[, peephole]).
# masks (the regularisers, the same dict for a forward and its backward): "input" [N, I], "state" [N, H] and
# "weight" [H, G*H] dropout masks, and the LSTM's "zoneout_h", "zoneout_c" / the GRU's and RNN's "zoneout_h": a rate in
# [0, 1) (the expectation) or keep masks [T, N, H] of 0 and 1.
Masks = Optional[dict[str, "Float | float"]]
def rnn_forward(
    x: Float,                       # [T, N, I]
    h0: Float,                      # [N, H]
    kernel: Float,                  # [I, H]
    recurrent_kernel: Float,        # [H, H]
    bias: Float,                    # [H]
    lengths: Optional[ArrayLike] = None,  # [N] integers in [0, T]
    activation: Literal["tanh", "relu", "sigmoid"] = "tanh",
    keep_cache: bool = True,        # False: an inference pass, cache None, the same outputs bit for bit
    masks: Masks = None,
) -> tuple[Float, Float, Optional[dict[str, Float]]]: ...
def rnn_backward(
    dy: Optional[Float],            # [T, N, H] or None (zero)
    dh_n: Optional[Float],          # [N, H] or None (zero)
    cache: dict[str, Float],
    x: Float,
    kernel: Float,
    recurrent_kernel: Float,
    bias: Float,
    lengths: Optional[ArrayLike] = None,
    activation: Literal["tanh", "relu", "sigmoid"] = "tanh",
    masks: Masks = None,
) -> dict[str, Float]: ...
def lstm_forward(
    x: Float,                       # [T, N, I]
    h0: Float,                      # [N, H]
    c0: Float,                      # [N, H]
    kernel: Float,                  # [I, G*H], G = 4 (3 when coupled)
    recurrent_kernel: Float,        # [H, G*H]
    bias: Float,                    # [G*H]
    peephole: Optional[Float] = None,  # [P, H], P = 3 (2 when coupled)
    lengths: Optional[ArrayLike] = None,
    coupled: bool = False,
    keep_cache: bool = True,
    masks: Masks = None,
) -> tuple[Float, Float, Float, Optional[dict[str, Float]]]: ...
def lstm_backward(
    dy: Optional[Float],
    dh_n: Optional[Float],
    dc_n: Optional[Float],
    cache: dict[str, Float],
    x: Float,
    kernel: Float,
    recurrent_kernel: Float,
    bias: Float,
    peephole: Optional[Float] = None,
    lengths: Optional[ArrayLike] = None,
    coupled: bool = False,
    masks: Masks = None,
) -> dict[str, Float]: ...
def gru_forward(
    x: Float,                       # [T, N, I]
    h0: Float,                      # [N, H]
    kernel: Float,                  # [I, 3H]
    recurrent_kernel: Float,        # [H, 3H]
    bias: Float,                    # [2, 3H] when reset_after, else [3H]
    lengths: Optional[ArrayLike] = None,
    reset_after: bool = True,
    keep_cache: bool = True,
    masks: Masks = None,
) -> tuple[Float, Float, Optional[dict[str, Float]]]: ...
def gru_backward(
    dy: Optional[Float],
    dh_n: Optional[Float],
    cache: dict[str, Float],
    x: Float,
    kernel: Float,
    recurrent_kernel: Float,
    bias: Float,
    lengths: Optional[ArrayLike] = None,
    reset_after: bool = True,
    masks: Masks = None,
) -> dict[str, Float]: ...

# Steppers (cpp/rnnext/stepper.h): a stack of single-direction layers stepped one time step at a time, on copies
# of the weights packed once; layers holds one weight tuple per layer, layer k > 0 reading the outputs below (H
# units; P for the LSTM with projection).
class Stepper:
    @property
    def batch_size(self) -> int: ...
    # x [N, I], states one tuple of the cell's states per layer -> (y [N, H or P], new states)
    def step(self, x: Float, states: Sequence[tuple[Float, ...]]) -> tuple[Float, list[tuple[Float, ...]]]: ...

def rnn_stepper(
    layers: Sequence[tuple[Float, Float, Float]],  # (kernel, recurrent_kernel, bias)
    batch_size: int,
    activation: Literal["tanh", "relu", "sigmoid"] = "tanh",
) -> Stepper: ...
def lstm_stepper(
    layers: Sequence[tuple[Float, Float, Float, Optional[Float]]],  # (kernel, recurrent_kernel, bias, peephole)
    batch_size: int,
    coupled: bool = False,
) -> Stepper: ...
def gru_stepper(
    layers: Sequence[tuple[Float, Float, Float]],  # (kernel, recurrent_kernel, bias)
    batch_size: int,
    reset_after: bool = True,
) -> Stepper: ...
def layer_norm_lstm_stepper(
    layers: Sequence[tuple[Float, ...]],  # layer_norm_lstm_forward's seven weights, in its order
    batch_size: int,
) -> Stepper: ...
def layer_norm_gru_stepper(
    layers: Sequence[tuple[Float, ...]],  # layer_norm_gru_forward's five weights, in its order
    batch_size: int,
) -> Stepper: ...
def projected_lstm_stepper(
    layers: Sequence[tuple[Float, Float, Float, Float]],  # (kernel, recurrent_kernel, bias, projection)
    batch_size: int,
) -> Stepper: ...

# Optimizer updates (cpp/rnnext/optim.h): in place on value and the state arrays, all of value's shape and dtype;
# grad is only read. momentum_buffer is None exactly when momentum is 0.
def sgd_update(
    value: Float,
    grad: Float,
    momentum_buffer: Optional[Float],
    lr: float,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    initialize_buffer: bool,        # the buffer's first update: set to the gradient
) -> None: ...
def adagrad_update(value: Float, grad: Float, squared_sum: Float, lr: float, eps: float, weight_decay: float) -> None: ...
def rmsprop_update(
    value: Float,
    grad: Float,
    square_avg: Float,
    momentum_buffer: Optional[Float],
    lr: float,
    alpha: float,
    eps: float,
    momentum: float,
    weight_decay: float,
) -> None: ...
def adam_update(
    value: Float,
    grad: Float,
    m: Float,
    v: Float,
    step: int,                      # this update's number, >= 1
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,   # AdamW
) -> None: ...

# Lists of gradients, float32 and float64 mixed; the norm is summed in float64, bitwise the same for any thread count.
def grad_norm(grads: Sequence[Float]) -> float: ...
def clip_grad_norm(grads: Sequence[Float], max_norm: float) -> float: ...
def clip_grad_value(grads: Sequence[Float], clip_value: float) -> None: ...
def zero_grads(grads: Sequence[Float]) -> None: ...

# Embedding (cpp/rnnext/embedding.h): ids are integers of any shape in [0, V).
def embedding_forward(
    table: Float,                   # [V, D]
    ids: ArrayLike,
    out: Optional[Float] = None,    # [*ids.shape, D], written and returned when given
) -> Float: ...
def embedding_backward(
    table_grad: Float,              # [V, D], ACCUMULATED in place
    dy: Float,                      # [*ids.shape, D]
    ids: ArrayLike,
    padding_idx: Optional[SupportsIndex] = None,
) -> None: ...

# Dense over rows: M rows (N or N*T flattened), F input features, U units.
class DenseGrads(TypedDict):
    x: Float                        # [M, F]
    kernel: Float                   # [F, U]
    bias: Float                     # [U]

DenseActivation = Literal["linear", "sigmoid", "tanh", "relu", "softmax"]

def dense_forward(
    x: Float,                       # [M, F]
    kernel: Float,                  # [F, U]
    bias: Float,                    # [U]
    activation: DenseActivation = "linear",
) -> Float: ...                     # y [M, U]
def dense_backward(
    dy: Float,                      # [M, U]
    y: Float,                       # [M, U], the forward's output
    x: Float,
    kernel: Float,
    activation: DenseActivation = "linear",
    dkernel: Optional[Float] = None,  # [F, U], added to in place when given
    dbias: Optional[Float] = None,    # [U], added to in place when given
) -> DenseGrads: ...

# Losses: (loss, gradient with the shape and dtype of the first argument). rnnext.losses documents them.
Reduction = Literal["mean", "sum"]

def softmax_cross_entropy(
    logits: Float,                  # [..., C]
    targets: NDArray[np.integer],   # [...] class ids, in [0, C) where the position counts
    mask: Optional[ArrayLike] = None,     # [...] bool or 0/1
    lengths: Optional[ArrayLike] = None,  # [N] integers in [0, T], for logits [N, T, C]
    reduction: Reduction = "mean",
) -> tuple[float, Float]: ...
def binary_cross_entropy_with_logits(
    logits: Float,
    targets: Float,                 # logits' shape and dtype, values in [0, 1]
    reduction: Reduction = "mean",
) -> tuple[float, Float]: ...
def mean_squared_error(
    predictions: Float,
    targets: Float,                 # predictions' shape and dtype
    reduction: Reduction = "mean",
) -> tuple[float, Float]: ...

# The cells whose recurrence is elementwise (cpp/rnnext/indrnn.h, mingru.h, minlstm.h, sru.h, qrnn.h): forward and
# backward as for the cells above; IndRNN's and SRU's recurrent weights are vectors, minGRU and minLSTM have none.
def indrnn_forward(
    x: Float,                       # [T, N, I]
    h0: Float,                      # [N, H]
    kernel: Float,                  # [I, H]
    recurrent_weight: Float,        # [H]
    bias: Float,                    # [H]
    lengths: Optional[ArrayLike] = None,
    activation: Literal["relu", "tanh"] = "relu",
) -> tuple[Float, Float, dict[str, Float]]: ...
def indrnn_backward(
    dy: Optional[Float],
    dh_n: Optional[Float],
    cache: dict[str, Float],
    x: Float,
    kernel: Float,
    recurrent_weight: Float,
    bias: Float,
    lengths: Optional[ArrayLike] = None,
    activation: Literal["relu", "tanh"] = "relu",
) -> dict[str, Float]: ...
def mingru_forward(
    x: Float,                       # [T, N, I]
    h0: Float,                      # [N, H]
    kernel: Float,                  # [I, 2H] gate order z, h~
    bias: Float,                    # [2H]
    lengths: Optional[ArrayLike] = None,
) -> tuple[Float, Float, dict[str, Float]]: ...
def mingru_backward(
    dy: Optional[Float],
    dh_n: Optional[Float],
    cache: dict[str, Float],
    x: Float,
    kernel: Float,
    bias: Float,
    lengths: Optional[ArrayLike] = None,
) -> dict[str, Float]: ...
def minlstm_forward(
    x: Float,                       # [T, N, I]
    h0: Float,                      # [N, H]
    kernel: Float,                  # [I, 3H] gate order f, i, h~
    bias: Float,                    # [3H]
    lengths: Optional[ArrayLike] = None,
) -> tuple[Float, Float, dict[str, Float]]: ...
def minlstm_backward(
    dy: Optional[Float],
    dh_n: Optional[Float],
    cache: dict[str, Float],
    x: Float,
    kernel: Float,
    bias: Float,
    lengths: Optional[ArrayLike] = None,
) -> dict[str, Float]: ...
def sru_forward(
    x: Float,                       # [T, N, I]
    h0: Float,                      # [N, H] h_n of rows of length 0 (the output feeds nothing back)
    c0: Float,                      # [N, H]
    kernel: Float,                  # [I, 4H] blocks h~, f, r, skip; or [I, 3H] (skip = x) when I = H
    recurrent_weight: Float,        # [2, H] rows v_f, v_r
    bias: Float,                    # [2, H] rows b_f, b_r
    lengths: Optional[ArrayLike] = None,
) -> tuple[Float, Float, Float, dict[str, Float]]: ...
def sru_backward(
    dy: Optional[Float],
    dh_n: Optional[Float],
    dc_n: Optional[Float],
    cache: dict[str, Float],
    x: Float,
    kernel: Float,
    recurrent_weight: Float,
    bias: Float,
    lengths: Optional[ArrayLike] = None,
) -> dict[str, Float]: ...
def qrnn_forward(
    x: Float,                       # [T, N, I]
    h0: Float,                      # [N, H] h_n of rows of length 0 (the output feeds nothing back)
    c0: Float,                      # [N, H]
    x0: Float,                      # [N, (K-1)*I] the inputs before x[0], block j-1 = x[-j]
    kernel: Float,                  # [K, I, 3H] blocks z, f, o; tap j multiplies x[t-j]
    bias: Float,                    # [3H]
    lengths: Optional[ArrayLike] = None,
) -> tuple[Float, Float, Float, Float, dict[str, Float]]: ...
def qrnn_backward(
    dy: Optional[Float],
    dh_n: Optional[Float],
    dc_n: Optional[Float],
    dx_n: Optional[Float],
    cache: dict[str, Float],
    x: Float,
    x0: Float,
    kernel: Float,
    bias: Float,
    lengths: Optional[ArrayLike] = None,
) -> dict[str, Float]: ...

# The issue-15 cell variants (cpp/rnnext/layer_norm_lstm.h, layer_norm_gru.h, lstm_projection.h); cache keys as
# their twins in rnnext.reference.layer_norm_cells and projection_cells.
def layer_norm_lstm_forward(
    x: Float,                       # [T, N, I]
    h0: Float,                      # [N, H]
    c0: Float,                      # [N, H]
    kernel: Float,                  # [I, 4H]
    recurrent_kernel: Float,        # [H, 4H]
    bias: Float,                    # [4H]
    ln_input_gamma: Float,          # [4H]
    ln_recurrent_gamma: Float,      # [4H]
    ln_cell_gamma: Float,           # [H]
    ln_cell_beta: Float,            # [H]
    lengths: Optional[ArrayLike] = None,
    keep_cache: bool = True,
    masks: Masks = None,            # as lstm_forward's
) -> tuple[Float, Float, Float, Optional[dict[str, Float]]]: ...
def layer_norm_lstm_backward(
    dy: Optional[Float],
    dh_n: Optional[Float],
    dc_n: Optional[Float],
    cache: dict[str, Float],
    x: Float,
    kernel: Float,
    recurrent_kernel: Float,
    bias: Float,
    ln_input_gamma: Float,
    ln_recurrent_gamma: Float,
    ln_cell_gamma: Float,
    ln_cell_beta: Float,
    lengths: Optional[ArrayLike] = None,
    masks: Masks = None,
) -> dict[str, Float]: ...
def layer_norm_gru_forward(
    x: Float,                       # [T, N, I]
    h0: Float,                      # [N, H]
    kernel: Float,                  # [I, 3H]
    recurrent_kernel: Float,        # [H, 3H]
    bias: Float,                    # [2, 3H]
    ln_input_gamma: Float,          # [3H]
    ln_recurrent_gamma: Float,      # [3H]
    lengths: Optional[ArrayLike] = None,
    keep_cache: bool = True,
    masks: Masks = None,            # as gru_forward's
) -> tuple[Float, Float, Optional[dict[str, Float]]]: ...
def layer_norm_gru_backward(
    dy: Optional[Float],
    dh_n: Optional[Float],
    cache: dict[str, Float],
    x: Float,
    kernel: Float,
    recurrent_kernel: Float,
    bias: Float,
    ln_input_gamma: Float,
    ln_recurrent_gamma: Float,
    lengths: Optional[ArrayLike] = None,
    masks: Masks = None,
) -> dict[str, Float]: ...
def projected_lstm_forward(
    x: Float,                       # [T, N, I]
    h0: Float,                      # [N, P]
    c0: Float,                      # [N, H]
    kernel: Float,                  # [I, 4H]
    recurrent_kernel: Float,        # [P, 4H]
    bias: Float,                    # [4H]
    projection: Float,              # [H, P], 1 <= P < H
    lengths: Optional[ArrayLike] = None,
    keep_cache: bool = True,
    masks: Masks = None,            # h's masks with P units: state [N, P], weight [P, 4H], zoneout_h [T, N, P]
) -> tuple[Float, Float, Float, Optional[dict[str, Float]]]: ...
def projected_lstm_backward(
    dy: Optional[Float],
    dh_n: Optional[Float],
    dc_n: Optional[Float],
    cache: dict[str, Float],
    x: Float,
    kernel: Float,
    recurrent_kernel: Float,
    bias: Float,
    projection: Float,
    lengths: Optional[ArrayLike] = None,
    masks: Masks = None,
) -> dict[str, Float]: ...

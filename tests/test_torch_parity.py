"""Checks the engine against PyTorch's own LSTM, GRU and RNN (one layer, one direction): outputs, final states and
every gradient, in float32 and float64, with and without packed variable-length batches. Skipped without torch."""
import numpy as np
import pytest

import rnnext

from conftest import DTYPES, assert_close, mixed_lengths

# cell -> (torch.nn module class name, its keyword options, rnnext cell, rnnext keyword options)
CELLS = {
    "lstm": ("LSTM", {}, "lstm", {}),
    "gru": ("GRU", {}, "gru", {"reset_after": True}),
    "rnn-tanh": ("RNN", {"nonlinearity": "tanh"}, "rnn", {"activation": "tanh"}),
    "rnn-relu": ("RNN", {"nonlinearity": "relu"}, "rnn", {"activation": "relu"}),
}
# (T, N, I, H): H = 37 and 70 leave a remainder after the engine's 32-unit blocks; I != H.
SHAPES = [(6, 4, 5, 37), (3, 5, 8, 70)]

# Relative to each tensor's largest entry.
# - float64: the same products summed in different orders on both sides; observed <= 1e-15, so 1e-10 leaves five
#   orders of margin while a wrong conversion (a transposed kernel, a swapped gate block) is off at 1e-1.
# - float32: both sides round, with different vectorised tanh/sigmoid approximations (Eigen's here, torch's own) and
#   different summation orders, so two float32 errors of a few ulp add up; observed <= 3e-7, 1e-5 leaves 30x.
RTOL = {np.float32: 1e-5, np.float64: 1e-10}


def rnnext_weights(module, cell):
    """kernel [I, G*H], recurrent_kernel [H, G*H] and bias in rnnext's layouts from a one-layer torch module.

    The gate orders already agree (LSTM i,f,g,o; GRU r,z,n). torch keeps two biases that are simply added, except for
    the GRU, where b_hn sits inside r * (h.U_n + b_hn): there rnnext's reset_after bias is [2, 3H] = (b_ih, b_hh).
    """
    w_ih = module.weight_ih_l0.detach().numpy()  # [G*H, I]
    w_hh = module.weight_hh_l0.detach().numpy()  # [G*H, H]
    b_ih = module.bias_ih_l0.detach().numpy()    # [G*H]
    b_hh = module.bias_hh_l0.detach().numpy()    # [G*H]
    bias = np.stack([b_ih, b_hh]) if cell == "gru" else b_ih + b_hh
    return np.ascontiguousarray(w_ih.T), np.ascontiguousarray(w_hh.T), bias


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-N{}-I{}-H{}".format(*s))
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPES.keys())
@pytest.mark.parametrize("name", CELLS)
def test_matches_torch(torch, name, dtype, packed, shape):
    T, N, I, H = shape
    class_name, module_options, cell, options = CELLS[name]
    np_dtype, torch_dtype = DTYPES[dtype], getattr(torch, dtype)
    torch.manual_seed(0)  # torch's default init: every weight and both biases uniform in +-1/sqrt(H)
    module = getattr(torch.nn, class_name)(I, H, num_layers=1, bias=True, batch_first=False, bidirectional=False,
                                           dtype=torch_dtype, **module_options)
    kernel, recurrent_kernel, bias = rnnext_weights(module, cell)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, N, I)).astype(np_dtype)
    h0 = (0.5 * rng.standard_normal((N, H))).astype(np_dtype)
    c0 = (0.5 * rng.standard_normal((N, H))).astype(np_dtype)
    dy = rng.standard_normal((T, N, H)).astype(np_dtype)
    dh_n = rng.standard_normal((N, H)).astype(np_dtype)
    dc_n = rng.standard_normal((N, H)).astype(np_dtype)
    lengths = mixed_lengths(T, N, shortest=1) if packed else None  # torch's packing rejects length 0

    # torch: time-major input, states [1, N, H]; packed sequences give zero outputs past each row's length.
    x_t = torch.tensor(x, requires_grad=True)
    h0_t = torch.tensor(h0[None], requires_grad=True)
    c0_t = torch.tensor(c0[None], requires_grad=True)
    state0 = (h0_t, c0_t) if cell == "lstm" else h0_t
    if packed:
        sequence = torch.nn.utils.rnn.pack_padded_sequence(x_t, torch.from_numpy(lengths), enforce_sorted=False)
        out, state = module(sequence, state0)
        y_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    else:
        y_t, state = module(x_t, state0)
    h_n_t, c_n_t = state if cell == "lstm" else (state, None)
    loss = (y_t * torch.from_numpy(dy)).sum() + (h_n_t[0] * torch.from_numpy(dh_n)).sum()
    if cell == "lstm":
        loss = loss + (c_n_t[0] * torch.from_numpy(dc_n)).sum()
    loss.backward()

    expected = {"y": y_t.detach().numpy(), "h_n": h_n_t[0].detach().numpy()}
    expected_grads = {"x": x_t.grad.numpy(), "h0": h0_t.grad[0].numpy(),
                      "kernel": module.weight_ih_l0.grad.numpy().T,
                      "recurrent_kernel": module.weight_hh_l0.grad.numpy().T}
    bias_ih_grad, bias_hh_grad = module.bias_ih_l0.grad.numpy(), module.bias_hh_l0.grad.numpy()

    if cell == "lstm":
        y, h_n, c_n, cache = rnnext.lstm_forward(x, h0, c0, kernel, recurrent_kernel, bias, lengths=lengths, **options)
        grads = rnnext.lstm_backward(dy, dh_n, dc_n, cache, x, kernel, recurrent_kernel, bias, lengths=lengths,
                                     **options)
        outputs = {"y": y, "h_n": h_n, "c_n": c_n}
        expected["c_n"] = c_n_t[0].detach().numpy()
        expected_grads["c0"] = c0_t.grad[0].numpy()
        assert grads["peephole"] is None
        del grads["peephole"]
    else:
        forward, backward = getattr(rnnext, f"{cell}_forward"), getattr(rnnext, f"{cell}_backward")
        y, h_n, cache = forward(x, h0, kernel, recurrent_kernel, bias, lengths=lengths, **options)
        grads = backward(dy, dh_n, cache, x, kernel, recurrent_kernel, bias, lengths=lengths, **options)
        outputs = {"y": y, "h_n": h_n}

    # torch's two biases are added (LSTM, RNN), so each one's gradient is the whole of ours; the GRU's are
    # rows 0 and 1 of ours.
    if cell == "gru":
        expected_grads["bias"] = np.stack([bias_ih_grad, bias_hh_grad])
    else:
        expected_grads["bias (= bias_ih_l0.grad)"] = bias_ih_grad
        expected_grads["bias (= bias_hh_l0.grad)"] = bias_hh_grad
        grads["bias (= bias_ih_l0.grad)"] = grads["bias (= bias_hh_l0.grad)"] = grads.pop("bias")

    for value in (*outputs.values(), *grads.values()):
        assert value.dtype == np_dtype
    assert_close(outputs, expected, RTOL[np_dtype], f"{name} {dtype} forward vs torch", finite=True)
    assert_close(grads, expected_grads, RTOL[np_dtype], f"{name} {dtype} gradients vs torch", finite=True)
    if packed:
        for n, length in enumerate(lengths):
            assert not y[length:, n].any(), f"row {n}: engine outputs past its length {length} are not zero"

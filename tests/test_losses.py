"""Tests for rnnext.losses: finite-difference gradients, hand-computed values, extremes, errors, and PyTorch."""
import math

import numpy as np
import pytest

from rnnext.losses import (
    binary_cross_entropy_with_logits,
    log_softmax,
    mean_squared_error,
    softmax,
    softmax_cross_entropy,
)

from conftest import assert_close, numerical_gradient

# Every comparison below is absolute (assert_close with absolute=True: max |actual - expected| <= tol) and allows
# no NaN or inf (finite=True).
# Central differences in float64 with step 1e-6 have truncation ~1e-12 and rounding ~1e-10 on these
# O(1) losses; 1e-7 absolute leaves two orders of margin without hiding a wrong factor.
FD_STEP = 1e-6
FD_TOL = 1e-7
# torch and NumPy do the same float64 arithmetic in a different order.
TORCH_TOL = 1e-12


def sequence_batch(rng, batch=3, steps=4, classes=5):
    logits = rng.standard_normal((batch, steps, classes))
    targets = rng.integers(0, classes, size=(batch, steps))
    return logits, targets


# ---------------------------------------------------------------- softmax helpers


def test_softmax_rows_sum_to_one_and_match_log_softmax():
    logits = np.random.default_rng(0).standard_normal((4, 7)) * 10
    probs = softmax(logits)
    assert_close(probs.sum(axis=-1), np.ones(4), 1e-12, "row sums", absolute=True, finite=True)
    assert_close(np.exp(log_softmax(logits)), probs, 1e-12, "exp(log_softmax)", absolute=True, finite=True)


def test_softmax_is_shift_invariant_and_stable():
    logits = np.array([[1000.0, 1001.0, 999.0]])
    assert_close(softmax(logits), softmax(logits - 1000), 1e-15, "shifted", absolute=True, finite=True)
    assert np.all(np.isfinite(log_softmax(np.array([[1e300, -1e300]]))))


# ---------------------------------------------------------------- softmax_cross_entropy: values


def test_cross_entropy_uniform_logits_is_log_num_classes():
    logits = np.zeros((3, 4))
    loss, grad = softmax_cross_entropy(logits, np.array([0, 1, 3]))
    assert loss == pytest.approx(math.log(4), abs=1e-15)
    # softmax = 1/4 everywhere, minus 1 at the target, divided by N=3.
    expected = np.full((3, 4), 0.25)
    expected[[0, 1, 2], [0, 1, 3]] -= 1
    assert_close(grad, expected / 3, 1e-15, "grad", absolute=True, finite=True)


def test_cross_entropy_hand_computed_two_classes():
    # p(target) = e^2 / (e^2 + e^0) = sigmoid(2), loss = -log(sigmoid(2)) = log(1 + e^-2)
    loss, grad = softmax_cross_entropy(np.array([[2.0, 0.0]]), np.array([0]), reduction="sum")
    assert loss == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-14)
    sigmoid_minus_two = 1 / (1 + math.exp(2.0))
    assert_close(grad, [[-sigmoid_minus_two, sigmoid_minus_two]], 1e-15, "grad", absolute=True, finite=True)


def test_cross_entropy_sum_is_count_times_mean():
    logits, targets = sequence_batch(np.random.default_rng(1))
    mean_loss, mean_grad = softmax_cross_entropy(logits, targets)
    sum_loss, sum_grad = softmax_cross_entropy(logits, targets, reduction="sum")
    assert sum_loss == pytest.approx(mean_loss * targets.size, rel=1e-13)
    assert_close(sum_grad, mean_grad * targets.size, 1e-13, "grad", absolute=True, finite=True)


def test_cross_entropy_keeps_dtype_and_shape():
    logits = np.random.default_rng(2).standard_normal((2, 3, 4)).astype(np.float32)
    loss, grad = softmax_cross_entropy(logits, np.zeros((2, 3), dtype=np.int32))
    assert isinstance(loss, float)
    assert grad.dtype == np.float32 and grad.shape == logits.shape


def test_cross_entropy_lengths_equals_mask():
    rng = np.random.default_rng(3)
    logits, targets = sequence_batch(rng)
    lengths = np.array([4, 1, 2])
    mask = np.arange(4)[None, :] < lengths[:, None]
    loss_lengths, grad_lengths = softmax_cross_entropy(logits, targets, lengths=lengths)
    loss_mask, grad_mask = softmax_cross_entropy(logits, targets, mask=mask.astype(np.int8))
    assert loss_lengths == loss_mask
    assert np.array_equal(grad_lengths, grad_mask)
    # Counted positions only: the mean is over 7 positions, not 12.
    kept_loss, _ = softmax_cross_entropy(logits[mask], targets[mask], reduction="sum")
    assert loss_mask == pytest.approx(kept_loss / 7, rel=1e-13)
    assert np.all(grad_mask[~mask] == 0)


def test_cross_entropy_ignores_padding_targets_and_garbage_logits():
    rng = np.random.default_rng(4)
    logits, targets = sequence_batch(rng)
    lengths = np.array([2, 4, 0])
    clean_loss, clean_grad = softmax_cross_entropy(logits, targets, lengths=lengths)
    padded_logits, padded_targets = logits.copy(), targets.copy()
    padding = np.arange(4)[None, :] >= lengths[:, None]
    padded_targets[padding] = -1
    padded_logits[padding] = np.nan
    loss, grad = softmax_cross_entropy(padded_logits, padded_targets, lengths=lengths)
    assert loss == clean_loss
    assert np.array_equal(grad, clean_grad)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_nothing_counted_gives_zero(reduction):
    logits, targets = sequence_batch(np.random.default_rng(5))
    loss, grad = softmax_cross_entropy(logits, targets, lengths=np.zeros(3, dtype=int), reduction=reduction)
    assert loss == 0.0 and not grad.any()
    loss, grad = softmax_cross_entropy(np.zeros((0, 5)), np.zeros(0, dtype=int), reduction=reduction)
    assert loss == 0.0 and grad.shape == (0, 5)


def test_cross_entropy_extreme_logits_are_finite():
    logits = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, 1000.0]])
    loss, grad = softmax_cross_entropy(logits, np.array([1, 2]), reduction="sum")
    # Row 0: log-sum-exp = 1000, target logit -1000 -> 2000. Row 1: correct class with certainty -> 0.
    assert loss == pytest.approx(2000.0, rel=1e-15)
    assert np.all(np.isfinite(grad))
    assert_close(grad, [[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]], 1e-15, "grad", absolute=True, finite=True)
    float32_loss, float32_grad = softmax_cross_entropy(logits.astype(np.float32), np.array([1, 2]))
    assert math.isfinite(float32_loss) and np.all(np.isfinite(float32_grad))


def test_cross_entropy_nan_logits_give_nan_loss_without_warning():
    logits = np.zeros((2, 3))
    logits[1, 0] = np.nan
    loss, grad = softmax_cross_entropy(logits, np.array([0, 1]))
    assert math.isnan(loss)
    assert np.all(np.isnan(grad[1])) and np.all(np.isfinite(grad[0]))
    loss, _ = softmax_cross_entropy(np.array([[np.inf, 0.0]]), np.array([0]))
    assert math.isnan(loss)


# ---------------------------------------------------------------- softmax_cross_entropy: gradients


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("masking", ["none", "mask", "lengths"])
def test_cross_entropy_gradient_matches_finite_differences(reduction, masking):
    rng = np.random.default_rng(6)
    logits, targets = sequence_batch(rng, batch=3, steps=3, classes=4)
    options = {"reduction": reduction}
    if masking == "mask":
        options["mask"] = rng.random((3, 3)) < 0.6
    elif masking == "lengths":
        options["lengths"] = np.array([3, 0, 2])
    _, grad = softmax_cross_entropy(logits, targets, **options)
    expected = numerical_gradient(lambda: softmax_cross_entropy(logits, targets, **options)[0], logits, FD_STEP)
    assert_close(grad, expected, FD_TOL, f"dlogits ({reduction}, {masking})", absolute=True, finite=True)


def test_cross_entropy_gradient_2d():
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((5, 3)) * 3
    targets = rng.integers(0, 3, size=5)
    _, grad = softmax_cross_entropy(logits, targets)
    expected = numerical_gradient(lambda: softmax_cross_entropy(logits, targets)[0], logits, FD_STEP)
    assert_close(grad, expected, FD_TOL, "dlogits", absolute=True, finite=True)


# ---------------------------------------------------------------- softmax_cross_entropy: errors


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"targets": np.array([0, 3])}, "targets contains 3"),
        ({"targets": np.array([-1, 0])}, "targets contains -1"),
        ({"targets": np.array([0.0, 1.0])}, "targets has dtype float64"),
        ({"targets": np.array([0, 1, 2])}, r"targets has shape \(3,\), expected logits.shape\[:-1\] = \(2,\)"),
        ({"mask": np.ones(3, dtype=bool)}, r"mask has shape \(3,\)"),
        ({"mask": np.array([2, 1])}, "mask must be bool"),
        ({"lengths": np.array([1, 1])}, r"lengths needs logits of shape \[N, T, C\]"),
        ({"reduction": "none"}, "reduction is 'none'"),
        ({"logits": np.array([[1, 2, 3], [4, 5, 6]])}, "logits has dtype int"),
        ({"logits": np.zeros((2, 0))}, "logits has shape"),
        ({"mask": np.ones(2, dtype=bool), "lengths": np.ones(2, dtype=int)}, "mask or lengths, not both"),
    ],
)
def test_cross_entropy_rejects_bad_input(arguments, message):
    call = {"logits": np.zeros((2, 3)), "targets": np.array([0, 2])}
    call.update(arguments)
    with pytest.raises(ValueError, match=message):
        softmax_cross_entropy(**call)


@pytest.mark.parametrize(
    "lengths, message",
    [
        (np.array([1, 5]), r"lengths must lie in \[0, T=4\]"),
        (np.array([-1, 2]), r"lengths must lie in \[0, T=4\]"),
        (np.array([1, 2, 3]), r"lengths has shape \(3,\), expected \(N=2,\)"),
        (np.array([1.0, 2.0]), "lengths has dtype float64"),
    ],
)
def test_cross_entropy_rejects_bad_lengths(lengths, message):
    with pytest.raises(ValueError, match=message):
        softmax_cross_entropy(np.zeros((2, 4, 3)), np.zeros((2, 4), dtype=int), lengths=lengths)


# ---------------------------------------------------------------- binary_cross_entropy_with_logits


def test_binary_cross_entropy_hand_computed():
    # x=0: log 2 whatever y. x=2, y=1: log(1 + e^-2). x=-3, y=0.25: 0 + 0.75 + log(1 + e^-3)... written out:
    # max(x,0) - x*y + log1p(exp(-|x|)) = 0 + 0.75 + log1p(e^-3).
    logits = np.array([0.0, 2.0, -3.0])
    targets = np.array([0.7, 1.0, 0.25])
    loss, grad = binary_cross_entropy_with_logits(logits, targets, reduction="sum")
    expected = math.log(2) + math.log1p(math.exp(-2)) + 0.75 + math.log1p(math.exp(-3))
    assert loss == pytest.approx(expected, rel=1e-14)
    sigmoid = [0.5, 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(3))]
    assert_close(grad, np.array(sigmoid) - targets, 1e-15, "grad", absolute=True, finite=True)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_binary_cross_entropy_gradient_matches_finite_differences(reduction):
    rng = np.random.default_rng(8)
    logits = rng.standard_normal((4, 3)) * 3
    targets = rng.random((4, 3))
    _, grad = binary_cross_entropy_with_logits(logits, targets, reduction=reduction)
    expected = numerical_gradient(lambda: binary_cross_entropy_with_logits(logits, targets, reduction=reduction)[0],
                                  logits, FD_STEP)
    assert_close(grad, expected, FD_TOL, f"dlogits ({reduction})", absolute=True, finite=True)


def test_binary_cross_entropy_extreme_logits_are_finite():
    logits = np.array([1000.0, -1000.0, 1000.0, -1000.0])
    targets = np.array([1.0, 0.0, 0.0, 1.0])
    loss, grad = binary_cross_entropy_with_logits(logits, targets, reduction="sum")
    assert loss == pytest.approx(2000.0, rel=1e-15)
    assert_close(grad, [0.0, 0.0, 1.0, -1.0], 1e-15, "grad", absolute=True, finite=True)
    loss32, grad32 = binary_cross_entropy_with_logits(logits.astype(np.float32), targets)
    assert math.isfinite(loss32) and np.all(np.isfinite(grad32)) and grad32.dtype == np.float32


def test_binary_cross_entropy_nan_and_empty():
    loss, grad = binary_cross_entropy_with_logits(np.array([np.nan, 0.0]), np.array([1.0, 0.0]))
    assert math.isnan(loss) and np.isnan(grad[0]) and grad[1] == 0.25
    # inf * 0 inside the formula makes this NaN rather than inf; either way the caller sees a non-finite loss.
    loss, grad = binary_cross_entropy_with_logits(np.array([np.inf]), np.array([0.0]))
    assert not math.isfinite(loss)
    loss, grad = binary_cross_entropy_with_logits(np.zeros((0, 1)), np.zeros((0, 1)))
    assert loss == 0.0 and grad.shape == (0, 1)


@pytest.mark.parametrize(
    "logits, targets, message",
    [
        (np.zeros(3), np.zeros((3, 1)), r"targets has shape \(3, 1\), expected the shape of logits \(3,\)"),
        (np.zeros(2), np.array([0.5, 1.5]), r"targets must lie in \[0, 1\]"),
        (np.zeros(2), np.array([0.5, np.nan]), r"targets must lie in \[0, 1\]"),
        (np.zeros(2, dtype=int), np.zeros(2), "logits has dtype int"),
    ],
)
def test_binary_cross_entropy_rejects_bad_input(logits, targets, message):
    with pytest.raises(ValueError, match=message):
        binary_cross_entropy_with_logits(logits, targets)


# ---------------------------------------------------------------- mean_squared_error


def test_mean_squared_error_hand_computed():
    loss, grad = mean_squared_error(np.array([1.0, 2.0, 4.0]), np.array([1.0, 0.0, 1.0]))
    assert loss == pytest.approx((0 + 4 + 9) / 3, rel=1e-15)
    assert_close(grad, [0.0, 2 * 2 / 3, 2 * 3 / 3], 1e-15, "grad", absolute=True, finite=True)
    loss, grad = mean_squared_error(np.array([1.0, 2.0, 4.0]), np.array([1, 0, 1]), reduction="sum")
    assert loss == 13.0
    assert_close(grad, [0.0, 4.0, 6.0], 0.0, "grad", absolute=True, finite=True)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mean_squared_error_gradient_matches_finite_differences(reduction):
    rng = np.random.default_rng(9)
    predictions = rng.standard_normal((3, 4))
    targets = rng.standard_normal((3, 4))
    _, grad = mean_squared_error(predictions, targets, reduction=reduction)
    expected = numerical_gradient(lambda: mean_squared_error(predictions, targets, reduction=reduction)[0], predictions,
                                  FD_STEP)
    assert_close(grad, expected, FD_TOL, f"dpredictions ({reduction})", absolute=True, finite=True)


def test_mean_squared_error_dtype_nan_and_errors():
    _, grad = mean_squared_error(np.ones(3, dtype=np.float32), np.zeros(3))
    assert grad.dtype == np.float32
    loss, _ = mean_squared_error(np.array([np.nan, 1.0]), np.zeros(2))
    assert math.isnan(loss)
    with pytest.raises(ValueError, match=r"targets has shape \(2,\), expected the shape of predictions \(3,\)"):
        mean_squared_error(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="reduction is 'max'"):
        mean_squared_error(np.zeros(3), np.zeros(3), reduction="max")


# ---------------------------------------------------------------- against PyTorch


def torch_loss_and_grad(torch, function, logits, *args, **kwargs):
    logits_t = torch.tensor(logits, requires_grad=True)
    loss = function(logits_t, *args, **kwargs)
    loss.backward()
    return loss.item(), logits_t.grad.numpy()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_matches_torch(torch, reduction):
    rng = np.random.default_rng(10)
    logits, targets = sequence_batch(rng, batch=4, steps=6, classes=7)
    logits *= 5
    lengths = np.array([6, 3, 0, 1])
    padded_targets = np.where(np.arange(6)[None, :] < lengths[:, None], targets, -100)

    loss, grad = softmax_cross_entropy(logits, targets, lengths=lengths, reduction=reduction)

    # torch wants classes on axis 1: [N, C, T]; ignore_index drops the padded steps.
    def torch_cross_entropy(logits_t):
        return torch.nn.functional.cross_entropy(
            logits_t.permute(0, 2, 1), torch.tensor(padded_targets), ignore_index=-100, reduction=reduction
        )

    expected_loss, expected_grad = torch_loss_and_grad(torch, torch_cross_entropy, logits)
    assert loss == pytest.approx(expected_loss, rel=TORCH_TOL)
    assert_close(grad, expected_grad, TORCH_TOL, "dlogits vs torch", absolute=True, finite=True)

    flat_loss, flat_grad = softmax_cross_entropy(logits[0], targets[0], reduction=reduction)
    expected_loss, expected_grad = torch_loss_and_grad(
        torch, lambda x: torch.nn.functional.cross_entropy(x, torch.tensor(targets[0]), reduction=reduction), logits[0]
    )
    assert flat_loss == pytest.approx(expected_loss, rel=TORCH_TOL)
    assert_close(flat_grad, expected_grad, TORCH_TOL, "dlogits [N, C] vs torch", absolute=True, finite=True)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_binary_cross_entropy_matches_torch(torch, reduction):
    rng = np.random.default_rng(11)
    logits = rng.standard_normal((5, 3)) * 10
    targets = rng.random((5, 3))
    loss, grad = binary_cross_entropy_with_logits(logits, targets, reduction=reduction)
    expected_loss, expected_grad = torch_loss_and_grad(
        torch,
        lambda x: torch.nn.functional.binary_cross_entropy_with_logits(x, torch.tensor(targets), reduction=reduction),
        logits,
    )
    assert loss == pytest.approx(expected_loss, rel=TORCH_TOL)
    assert_close(grad, expected_grad, TORCH_TOL, "dlogits vs torch", absolute=True, finite=True)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mean_squared_error_matches_torch(torch, reduction):
    rng = np.random.default_rng(12)
    predictions = rng.standard_normal((4, 2, 3))
    targets = rng.standard_normal((4, 2, 3))
    loss, grad = mean_squared_error(predictions, targets, reduction=reduction)
    expected_loss, expected_grad = torch_loss_and_grad(
        torch, lambda x: torch.nn.functional.mse_loss(x, torch.tensor(targets), reduction=reduction), predictions
    )
    assert loss == pytest.approx(expected_loss, rel=TORCH_TOL)
    assert_close(grad, expected_grad, TORCH_TOL, "dpredictions vs torch", absolute=True, finite=True)

"""Activations, softmax and the loss: values, derivatives against finite differences, stability."""

import warnings

import numpy as np
import pytest

from conftest import EPS32, assert_close_gradients, gamma, numerical_gradient
from functions import (ACTIVATIONS, cross_entropy, log_softmax, softmax,
                       softmax_cross_entropy, value_and_derivative)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_derivative_matches_finite_differences(name):
    f, f_prime = ACTIVATIONS[name]
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(5, 4)) * 2
    Z[np.abs(Z) < 0.05] = 0.3  # away from the kink of the ReLU family
    analytic = f_prime(Z, f(Z.copy()))
    for index in np.ndindex(Z.shape):
        def value():
            return f(Z.copy())[index]
        numeric = numerical_gradient(value, Z)[index]
        assert_close_gradients(np.array(analytic[index]), np.array(numeric))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_keep_float32_and_write_into_out(name):
    f, f_prime = ACTIVATIONS[name]
    Z = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    out = np.empty_like(Z)
    A = f(Z, out=out)
    assert A.dtype == np.float32 and f_prime(Z, A).dtype == np.float32
    # float32 against float64: each float32 operation (gelu chains about six, on values up to
    # 3 ** 3) errs by a few ulps, on any SIMD implementation: 64 ulps relative, 8 ulps of 1.
    np.testing.assert_allclose(out, f(Z.astype(np.float64)), rtol=64 * EPS32, atol=8 * EPS32)  # see above


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_value_and_derivative_agree_with_the_table(name):
    f, f_prime = ACTIVATIONS[name]
    Z = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    A, D = np.full_like(Z, 7), np.full_like(Z, 7)
    value_and_derivative(name, Z, A, D)
    # The same float32 operations; NumPy may run an element on a scalar or a SIMD path, an ulp
    # or two apart, and 1 - A * A (tanh) turns an ulp of A into 2 ulps of 1: 8 ulps of 1.
    np.testing.assert_allclose(A, f(Z.copy()), rtol=8 * EPS32, atol=8 * EPS32)  # see above
    np.testing.assert_allclose(D, f_prime(Z, f(Z.copy())), rtol=8 * EPS32, atol=8 * EPS32)  # see above


def test_relu_shortcut_keeps_nan_visible():
    Z = np.array([[np.nan, -1.0, 2.0]], np.float32)
    A, D = np.empty_like(Z), np.empty_like(Z)
    value_and_derivative("relu", Z, A, D)
    assert np.isnan(A[0, 0]) and A[0, 1] == 0 and A[0, 2] == 2
    np.testing.assert_array_equal(D, [[0, 0, 1]])


def test_known_values():
    Z = np.array([[-2.0, 0.0, 3.0]])
    np.testing.assert_array_equal(ACTIVATIONS["relu"][0](Z), [[0, 0, 3]])
    # float64 throughout: two exact formulas agree to a few ulps (1e-16), far inside rtol 1e-7.
    np.testing.assert_allclose(ACTIVATIONS["sigmoid"][0](Z), 1 / (1 + np.exp(-Z)), rtol=1e-7)  # float64
    np.testing.assert_allclose(ACTIVATIONS["leaky_relu"][0](Z), [[-0.02, 0, 3]], rtol=1e-7)  # float64
    # gelu(10) = 5 (1 + tanh(43.7)), and tanh(43.7) is 1 to within 1e-37
    np.testing.assert_allclose(ACTIVATIONS["gelu"][0](np.array([[0.0, 10.0]])), [[0, 10]], atol=1e-9)  # float64


def test_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(6, 10))
    y = rng.integers(0, 10, size=6)
    loss, dZ = softmax_cross_entropy(Z.copy(), y)
    assert loss == pytest.approx(cross_entropy(Z, y), rel=1e-12)  # float64, 10-term sums: ~1e-15
    numeric = numerical_gradient(lambda: cross_entropy(Z, y), Z)
    assert_close_gradients(dZ, numeric)


def test_loss_and_gradient_of_column_major_logits():
    rng = np.random.default_rng(4)
    Z = rng.normal(size=(6, 10)).astype(np.float32)
    y = rng.integers(0, 10, size=6)
    loss, dZ = softmax_cross_entropy(Z, y)
    f_loss, f_dZ = softmax_cross_entropy(np.asfortranarray(Z), y)
    # float32 rows of 10 logits, summed in another memory order: each log(sum of exp) may move
    # by gamma(10) plus a few ulps, on each side; the gradient, of size at most 1 / B, by as
    # much relative to 1 / B (p - 1 cancels near p = 1, so the bound is absolute).
    assert f_loss == pytest.approx(loss, rel=0, abs=2 * (gamma(10) + 4 * EPS32))  # see above
    assert f_dZ.flags.f_contiguous and f_dZ.dtype == np.float32
    np.testing.assert_allclose(f_dZ, dZ, rtol=0, atol=2 * (gamma(10) + 4 * EPS32) / len(y))  # see above


def test_loss_is_mean_over_batch_and_gradient_divided_once():
    Z = np.zeros((4, 10))
    y = np.array([0, 1, 2, 3])
    loss, dZ = softmax_cross_entropy(Z, y)
    assert loss == pytest.approx(np.log(10), rel=1e-12)  # float64: exact to a few ulps
    assert dZ[0, 0] == pytest.approx((0.1 - 1) / 4, rel=1e-12) and dZ[0, 1] == pytest.approx(0.1 / 4, rel=1e-12)  # float64


def test_softmax_rows_sum_to_one_and_ignore_a_constant():
    rng = np.random.default_rng(2)
    Z = rng.normal(size=(3, 10))
    P = softmax(Z)
    # float64: 10-term sums and an exp of values up to 123 err by a few ulps times 123, ~1e-14
    np.testing.assert_allclose(P.sum(axis=1), 1, rtol=1e-12)  # float64, see above
    np.testing.assert_allclose(softmax(Z + 123.0), P, rtol=1e-12)  # float64, see above
    np.testing.assert_allclose(np.exp(log_softmax(Z)), P, rtol=1e-12)  # float64, see above


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_and_loss_stable_for_huge_logits(dtype):
    Z = np.array([[1e3, 0, -1e3], [1e3, 1e3, 1e3], [-1e3, -1e3, 1e3]], dtype=dtype)
    y = np.array([2, 0, 2])
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        P = softmax(Z)
        loss, dZ = softmax_cross_entropy(Z, y)
        direct = cross_entropy(Z, y)
    assert np.isfinite(P).all() and np.isfinite(dZ).all()
    # In float32: exp(0) = 1 exactly, and 1 / 3 and log(3) are each rounded once (half an ulp);
    # 8 float32 ulps covers them, and the float64 case a fortiori.
    np.testing.assert_allclose(P[1], [1 / 3] * 3, rtol=8 * EPS32)  # see above
    assert loss == pytest.approx((2000 + np.log(3) + 0) / 3, rel=8 * EPS32)  # see above
    assert direct == pytest.approx(loss, rel=8 * EPS32)  # see above


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_keep_the_dtype_without_out(name, dtype):
    f, f_prime = ACTIVATIONS[name]
    Z = np.linspace(-3, 3, 12, dtype=dtype).reshape(3, 4)
    A = f(Z.copy())
    assert A.dtype == dtype and f_prime(Z, A).dtype == dtype
    in_place = Z.copy()
    assert f(in_place, out=in_place) is in_place and in_place.dtype == dtype
    np.testing.assert_array_equal(in_place, A)  # the same float operations, in place or not


def test_derivatives_at_zero_take_the_left_slope():
    # The ReLU family has a kink at 0; its subgradient there is taken as the left slope.
    Z = np.array([[0.0, -1.0, 1.0]], np.float32)
    np.testing.assert_array_equal(ACTIVATIONS["relu"][1](Z, ACTIVATIONS["relu"][0](Z)), [[0, 0, 1]])
    np.testing.assert_array_equal(ACTIVATIONS["leaky_relu"][1](Z, ACTIVATIONS["leaky_relu"][0](Z)),
                                  np.array([[0.01, 0.01, 1]], np.float32))
    A, D = np.empty_like(Z), np.empty_like(Z)
    value_and_derivative("relu", Z, A, D)
    np.testing.assert_array_equal(D, [[0, 0, 1]])


def test_gelu_against_its_formula_in_float64():
    Z = np.linspace(-6, 6, 49)
    inner = np.sqrt(2 / np.pi) * (Z + 0.044715 * Z ** 3)
    expected = 0.5 * Z * (1 + np.tanh(inner))
    expected_derivative = (0.5 * (1 + np.tanh(inner))
                           + 0.5 * Z / np.cosh(inner) ** 2 * np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * Z ** 2))
    f, f_prime = ACTIVATIONS["gelu"]
    # float64 on both sides, a dozen operations on values up to 6 ** 3: a few ulps of 216, ~1e-13.
    np.testing.assert_allclose(f(Z), expected, rtol=1e-12, atol=1e-12)  # see above
    np.testing.assert_allclose(f_prime(Z, f(Z)), expected_derivative, rtol=1e-12, atol=1e-12)  # see above


# Rows with different maxima: the first row's maximum (30) is 110 above the second row's
# values; subtracting one maximum for the whole array makes the second row exp(-110), which
# float32 flushes to 0 (its smallest number is e^-103), and softmax 0 / 0.
ROWS = [[30.0, 0.0], [-80.0, -90.0]]


def expected_log_softmax():
    """log_softmax of ROWS in float64, by hand: a row [a, a - d] gives [-log1p(e^-d), -d - log1p(e^-d)]."""
    return np.array([[-np.log1p(np.exp(-30)), -30 - np.log1p(np.exp(-30))],
                     [-np.log1p(np.exp(-10)), -10 - np.log1p(np.exp(-10))]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_and_loss_subtract_each_rows_own_maximum(dtype):
    Z, y = np.array(ROWS, dtype), np.array([1, 0])
    expected = expected_log_softmax()
    with np.errstate(all="raise"):
        log_P, P = log_softmax(Z), softmax(Z)
        loss, dZ = softmax_cross_entropy(Z.copy(), y)
        direct = cross_entropy(Z, y)
    # Each entry is a subtraction and the log of a sum of two terms in [0, 1] near 1: a few
    # ulps of the entry plus a few ulps of 1 (8 eps of each); probabilities, a few ulps relative.
    eps = float(np.finfo(dtype).eps)
    np.testing.assert_allclose(log_P, expected, rtol=8 * eps, atol=8 * eps)  # see above
    np.testing.assert_allclose(P, np.exp(expected), rtol=8 * eps, atol=0)  # see above
    expected_loss = -(expected[0, 1] + expected[1, 0]) / 2
    assert loss == pytest.approx(expected_loss, rel=8 * eps) and direct == pytest.approx(expected_loss, rel=8 * eps)
    onehot = np.array([[0, 1], [1, 0]])
    np.testing.assert_allclose(dZ, (np.exp(expected) - onehot) / 2, rtol=8 * eps, atol=8 * eps / 2)  # see above


def test_loss_sums_in_float64():
    # Two float32 rows: a loss of exactly 10,000 (logits 0 and 1e4, label 0) and one of
    # log1p(e^-10) = 4.54e-5. Added in float32 the small one vanishes (an ulp of 1e4 is 1e-3);
    # the float64 sum keeps it. Each row's own float32 error is a few ulps of 1 (the log of a
    # sum near 1), so 8 eps32 bounds the mean's error.
    Z, y = np.array([[0.0, 1e4], [10.0, 0.0]], np.float32), np.array([0, 0])
    expected = (1e4 + np.log1p(np.exp(-10))) / 2
    assert cross_entropy(Z, y) == pytest.approx(expected, rel=0, abs=8 * EPS32)  # see above
    assert softmax_cross_entropy(Z, y)[0] == pytest.approx(expected, rel=0, abs=8 * EPS32)  # see above
    # The true classes' logits, minus each row's maximum: -1e4 and -1e-4 add to -1e4 in float32.
    Z, y = np.array([[1e4, 0.0], [0.0, 1e-4]], np.float32), np.array([1, 0])
    expected = (1e4 + np.log1p(np.exp(-1e4)) + 1e-4 + np.log1p(np.exp(-1e-4))) / 2
    assert softmax_cross_entropy(Z, y)[0] == pytest.approx(expected, rel=0, abs=8 * EPS32)  # see above

"""explain.py: saliency maps from MLP.backward, checked against finite differences."""

import numpy as np
import pytest

from conftest import assert_close_gradients, assert_close_sums, numerical_gradient
from app.page.explain import saliency
from functions import log_softmax
from mlp import MLP


def small_mlp(activation):
    """6 -> 5 -> 4 -> 3 in float64, with random biases so that no ReLU input sits on its kink."""
    model = MLP([6, 5, 4, 3], [activation, activation, "softmax"], np.random.default_rng(0), dtype=np.float64)
    for layer in model.layers:
        layer.b[...] = np.random.default_rng(9).normal(0, 0.5, size=layer.b.shape)
    return model


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu"])
@pytest.mark.parametrize("digit", [0, 1, 2])
def test_saliency_is_the_gradient_of_the_log_probability(activation, digit):
    """float64 central differences of log p(digit | x) against the backward pass."""
    model = small_mlp(activation)
    x = np.random.default_rng(4).uniform(0, 1, size=6)
    gradient, log_p = saliency(model, x, digit)

    def log_probability():
        return log_softmax(model.forward(x.reshape(1, 6)))[0, digit]

    assert_close_gradients(gradient, numerical_gradient(log_probability, x))
    assert log_p == pytest.approx(log_probability(), rel=1e-12)  # float64: a few ulps


def test_saliency_leaves_the_weights_and_dropout_alone():
    model = MLP([6, 5, 3], rng=np.random.default_rng(0), dtype=np.float64, dropout=0.5)
    before = model.flat_parameters.copy()
    first, _ = saliency(model, np.full(6, 0.5), 1)
    second, _ = saliency(model, np.full(6, 0.5), 1)
    np.testing.assert_array_equal(model.flat_parameters, before)
    np.testing.assert_array_equal(first, second)  # no dropout mask drawn while explaining
    assert model.layers[0].dropout == 0.5


def test_backward_returns_the_input_gradient_only_when_asked():
    model = small_mlp("relu")
    X = np.random.default_rng(1).uniform(size=(2, 6))
    model.forward(X, training=True)
    assert model.backward(np.ones((2, 3))) is None  # training skips the first layer's dX
    model.forward(X, training=True)
    assert model.backward(np.ones((2, 3)), need_input_gradient=True).shape == (2, 6)


def test_copy_has_the_same_weights_and_owns_them():
    model = small_mlp("tanh")
    clone = model.copy()
    np.testing.assert_array_equal(clone.flat_parameters, model.flat_parameters)
    clone.layers[0].W[...] = 0
    assert np.abs(model.layers[0].W).max() > 0
    assert clone.flat_parameters.dtype == np.float64


@pytest.mark.parametrize("bias", [5.0, 25.0, 60.0])  # 1 - p: 1.3e-2, 5.6e-11, 4.2e-26
def test_a_float32_saliency_is_exact_however_sure_the_reading(bias):
    """A digit read with p rounding to 1 in float32 had a map of rounding noise: dZ = onehot - p
    made 1 - p(digit) by subtraction, 0 or one float32 step (1.2e-7) where it was 1e-10. For
    one layer, d log p / dx = W (onehot - softmax(Z)); the reference takes the same float32
    logits Z into float64."""
    model = MLP([6, 3], rng=np.random.default_rng(0))  # float32
    model.layers[0].b[1] = bias
    x = np.random.default_rng(4).uniform(0, 1, size=6).astype(np.float32)
    gradient, _ = saliency(model, x, 1)
    Z = model.forward(x.reshape(1, 6))[0].astype(np.float64)
    probabilities = np.exp(Z - Z.max()) / np.exp(Z - Z.max()).sum()
    dZ = -probabilities
    dZ[1] = probabilities[[0, 2]].sum()  # 1 - p(1), without the subtraction's rounding
    W = model.layers[0].W.astype(np.float64)
    # float32 gradient = W @ dZ, 3 products summed; each dZ is itself off by a few float32
    # steps (exp, sum, division, and the sum of the other two): 3 + 4 terms' worth of gamma.
    assert_close_sums(gradient, W @ dZ, np.abs(W) @ np.abs(dZ), 3 + 4)

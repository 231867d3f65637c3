"""explain.py: saliency maps from MLP.backward, checked against finite differences."""

import numpy as np
import pytest

from conftest import assert_close_gradients, numerical_gradient
from explain import saliency
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

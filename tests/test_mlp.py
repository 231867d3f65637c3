"""MLP: whole-network gradients, one SGD step by hand, optimizers (its file: test_model_file.py)."""

import numpy as np
import pytest

from conftest import assert_close_gradients, numerical_gradient
from functions import cross_entropy, softmax_cross_entropy
from mlp import MLP
from optimizers import SGD, Adam, Momentum, learning_rate_at


def small_mlp(activation="relu", dropout=0.0):
    """4 -> 5 -> 3 -> 3 in float64, with random biases so that no ReLU input sits exactly
    on the kink at 0 (a sample whose hidden units are all off would give Z = b = 0)."""
    model = MLP([4, 5, 3, 3], [activation, activation, "softmax"], np.random.default_rng(0),
                dtype=np.float64, dropout=dropout)
    for layer in model.layers:
        layer.b[...] = np.random.default_rng(9).normal(0, 0.5, size=layer.b.shape)
    return model


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid", "gelu"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_whole_network_gradient_matches_finite_differences(activation, weight_decay):
    model = small_mlp(activation)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(5, 4))
    y = rng.integers(0, 3, size=5)

    def loss():
        penalty = 0.5 * weight_decay * sum((layer.W ** 2).sum() for layer in model.layers)
        return cross_entropy(model.forward(X), y) + penalty

    _, dZ = softmax_cross_entropy(model.forward(X, training=True), y)
    model.backward(dZ, weight_decay)
    assert_close_gradients(model.flat_gradients.copy(), numerical_gradient(loss, model.flat_parameters))


def test_one_sgd_step_worked_out_by_hand():
    # 1 input -> 1 ReLU unit -> 2 logits. W1 = [[2]], W2 = [[1, -1]], biases 0, x = 1, y = 1.
    model = MLP([1, 1, 2], ["relu", "softmax"], dtype=np.float64)
    model.layers[0].W[...] = [[2.0]]
    model.layers[1].W[...] = [[1.0, -1.0]]
    model.flat_parameters[[1, 4, 5]] = 0.0  # the biases
    X, y = np.array([[1.0]]), np.array([1])
    # Z1 = 2, A1 = 2, logits = [2, -2], p = [s, 1 - s] with s = sigmoid(4) = 0.98201379
    s = 1 / (1 + np.exp(-4))
    loss, dZ = softmax_cross_entropy(model.forward(X, training=True), y)
    # float64 throughout this test: the few operations err by ulps (1e-16), far inside 1e-9.
    assert loss == pytest.approx(-np.log(1 - s), rel=1e-9)  # 4.01814993
    # dlogits = p - onehot = [s, -s]; dW2 = A1 * dlogits = [2s, -2s]; db2 = [s, -s]
    # dA1 = dlogits @ W2.T = s + s = 2s; ReLU passes it (Z1 > 0): dW1 = x * 2s = 2s, db1 = 2s
    model.backward(dZ)
    model.update(SGD(), learning_rate=0.5)
    np.testing.assert_allclose(model.layers[0].W, [[2 - s]], rtol=1e-9)  # 1.01798621; float64
    np.testing.assert_allclose(model.layers[0].b, [-s], rtol=1e-9)  # float64
    np.testing.assert_allclose(model.layers[1].W, [[1 - s, -1 + s]], rtol=1e-9)  # float64
    np.testing.assert_allclose(model.layers[1].b, [-s / 2, s / 2], rtol=1e-9)  # float64


def test_layers_hold_views_of_the_flat_arrays():
    model = small_mlp()
    model.flat_parameters[:] = 0.5
    assert all((p == 0.5).all() for p in model.parameters())
    assert model.flat_parameters.size == 4 * 5 + 5 + 5 * 3 + 3 + 3 * 3 + 3


def test_optimizers_move_towards_the_minimum():
    for optimizer in (SGD(), Momentum(0.9), Momentum(0.9, nesterov=True), Adam()):
        p = np.array([3.0, -2.0])
        for _ in range(300):
            optimizer.step([p], [2 * p.copy()], 0.05)  # gradient of |p|^2
        assert np.abs(p).max() < 0.05, type(optimizer).__name__


def test_adam_first_step_is_learning_rate_times_sign():
    p = np.array([1.0, -1.0, 1.0])
    Adam().step([p], [np.array([0.3, -2.0, 1e-3])], 0.01)
    # float64; eps = 1e-8 beside |g| = 1e-3 shortens the third step by 1e-5 of 0.01: 1e-7 of p.
    np.testing.assert_allclose(p, [0.99, -0.99, 0.99], rtol=1e-6)  # see above


def test_learning_rate_schedules():
    # Python floats (float64): the formulas agree to a few ulps; approx's default rel is 1e-6.
    assert learning_rate_at(0, 100, 0.1) == 0.1
    assert learning_rate_at(0, 100, 0.1, "cosine", warmup_steps=10) == pytest.approx(0.01)
    assert learning_rate_at(10, 100, 0.1, "cosine", warmup_steps=10) == pytest.approx(0.1)
    assert learning_rate_at(99, 100, 0.1, "cosine") == pytest.approx(0.1 * 0.5 * (1 + np.cos(np.pi * 0.99)))
    assert learning_rate_at(80, 100, 0.1, "step") == pytest.approx(0.001)

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


# ------------------------------------------------------------ construction and its refusals

@pytest.mark.parametrize("layer_sizes", [[4], [4, 0, 3], [0, 3]])
def test_refuses_fewer_than_two_positive_sizes(layer_sizes):
    with pytest.raises(ValueError) as error:
        MLP(layer_sizes)
    assert str(error.value) == f"layer_sizes must hold at least two positive sizes, got {layer_sizes}"


@pytest.mark.parametrize("activations", [["relu", "relu"], ["softmax"], ["relu", "softmax", "softmax"]])
def test_refuses_activations_of_the_wrong_number_or_ending(activations):
    with pytest.raises(ValueError) as error:
        MLP([4, 3, 2], activations)
    assert str(error.value) == f"need 2 activation names ending with 'softmax', got {activations}"


def test_a_single_layer_network_is_allowed():
    model = MLP([4, 3])  # inputs straight to the logits: logistic regression
    assert model.activations == ["softmax"] and [layer.activation for layer in model.layers] == ["linear"]


def test_default_activations_are_relu_then_softmax():
    model = MLP([4, 5, 3, 2])
    assert model.layer_sizes == [4, 5, 3, 2]
    assert model.activations == ["relu", "relu", "softmax"]
    # The softmax is not applied inside the network: the last layer is linear.
    assert [layer.activation for layer in model.layers] == ["relu", "relu", "linear"]


def test_dropout_on_hidden_layers_only():
    model = MLP([4, 5, 3, 2], ["tanh", "sigmoid", "softmax"], dropout=0.25)
    assert [layer.activation for layer in model.layers] == ["tanh", "sigmoid", "linear"]
    assert [layer.dropout for layer in model.layers] == [0.25, 0.25, 0.0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_initial_weights_are_drawn_in_order_from_the_given_generator(dtype):
    model = MLP([4, 5, 3], ["tanh", "softmax"], np.random.default_rng(7), dtype=dtype)
    rng = np.random.default_rng(7)
    # Glorot for tanh and for the linear output layer: sqrt(2 / (n_in + n_out)), the product
    # in float64 and then rounded to dtype, as the layer does: exact.
    W0 = (rng.standard_normal((4, 5)) * np.sqrt(2 / 9)).astype(dtype)
    W1 = (rng.standard_normal((5, 3)) * np.sqrt(2 / 8)).astype(dtype)
    np.testing.assert_array_equal(model.layers[0].W, W0)
    np.testing.assert_array_equal(model.layers[1].W, W1)
    assert not model.layers[0].b.any() and not model.layers[1].b.any()
    assert model.flat_parameters.dtype == dtype and model.flat_gradients.dtype == dtype
    assert all(array.dtype == dtype for layer in model.layers for array in (layer.W, layer.b, layer.dW, layer.db))


def test_layers_draw_their_dropout_masks_from_the_given_generator():
    model = MLP([4, 5, 3], rng=np.random.default_rng(7), dropout=0.5)
    assert all(layer.rng is model.layers[0].rng for layer in model.layers)
    X = np.ones((6, 4), np.float32)
    again = MLP([4, 5, 3], rng=np.random.default_rng(7), dropout=0.5)
    np.testing.assert_array_equal(model.forward(X, training=True), again.forward(X, training=True))  # same seed, same masks


# ------------------------------------------------------------ the flat layout

def test_layers_are_views_of_the_flat_arrays_in_the_order_of_parameters():
    model = small_mlp()
    parameters = model.parameters()
    assert [p.shape for p in parameters] == [(4, 5), (5,), (5, 3), (3,), (3, 3), (3,)]
    np.testing.assert_array_equal(np.concatenate([p.ravel() for p in parameters]), model.flat_parameters)
    model.flat_parameters[:] = np.arange(model.flat_parameters.size)  # each number names its place
    offset = 0
    for layer in model.layers:
        for array in (layer.W, layer.b):
            np.testing.assert_array_equal(array.ravel(), np.arange(offset, offset + array.size))
            offset += array.size
    assert offset == model.flat_parameters.size == model.flat_gradients.size
    rng = np.random.default_rng(3)
    _, dZ = softmax_cross_entropy(model.forward(rng.normal(size=(5, 4)), training=True), rng.integers(0, 3, 5))
    model.backward(dZ)
    gradients = [array.ravel() for layer in model.layers for array in (layer.dW, layer.db)]
    np.testing.assert_array_equal(np.concatenate(gradients), model.flat_gradients)
    model.flat_gradients[:] = -1.0
    assert all((array == -1.0).all() for layer in model.layers for array in (layer.dW, layer.db))


# ------------------------------------------------------------ forward, backward

def reference_logits(model, X):
    """The logits of a ReLU network computed again in float64, layer by layer."""
    A = np.asarray(X, np.float64)
    for layer in model.layers[:-1]:
        A = np.maximum(A @ layer.W.astype(np.float64) + layer.b, 0)
    return A @ model.layers[-1].W.astype(np.float64) + model.layers[-1].b


def test_forward_predicts_without_dropout_by_default():
    model = small_mlp(dropout=0.5)
    X = np.random.default_rng(3).normal(size=(5, 4))
    # float64, sums of at most 5 products of numbers below 10: errors near 1e-14, far inside 1e-12.
    np.testing.assert_allclose(model.forward(X), reference_logits(model, X), rtol=1e-12, atol=1e-12)  # float64: see above


def test_backward_returns_nothing_unless_asked_for_the_input_gradient():
    model = small_mlp()
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(5, 4)), rng.integers(0, 3, size=5)
    _, dZ = softmax_cross_entropy(model.forward(X, training=True), y)
    assert model.backward(dZ.copy()) is None
    assert model.backward(dZ.copy(), weight_decay=0.1) is None
    dX = model.backward(dZ, need_input_gradient=True).copy()
    assert_close_gradients(dX, numerical_gradient(lambda: cross_entropy(model.forward(X), y), X))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_decay_adds_its_penalty_gradient_to_the_weights_only(dtype):
    model = MLP([3, 4, 2], rng=np.random.default_rng(1), dtype=dtype)
    model.forward(np.ones((2, 3), dtype), training=True)
    model.backward(np.zeros((2, 2), dtype), weight_decay=0.1)  # the loss adds nothing
    for layer in model.layers:
        # One product in dtype, added to a zero gradient: exact.
        np.testing.assert_array_equal(layer.dW, dtype(0.1) * layer.W)
        assert not layer.db.any()
    if dtype is np.float64:
        penalty = lambda: 0.05 * sum((layer.W ** 2).sum() for layer in model.layers)  # (0.1 / 2) sum W^2
        assert_close_gradients(model.flat_gradients.copy(), numerical_gradient(penalty, model.flat_parameters))


# ------------------------------------------------------------ copy, all_finite

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_copy_is_equal_and_independent(dtype):
    model = MLP([4, 5, 3], ["tanh", "softmax"], np.random.default_rng(2), dtype=dtype, dropout=0.5)
    model.flat_parameters[:] = np.random.default_rng(4).normal(size=model.flat_parameters.size)
    clone = model.copy()
    assert clone.layer_sizes == [4, 5, 3] and clone.activations == ["tanh", "softmax"]
    assert clone.flat_parameters.dtype == dtype
    assert [layer.dropout for layer in clone.layers] == [0.0, 0.0]
    np.testing.assert_array_equal(clone.flat_parameters, model.flat_parameters)
    X = np.random.default_rng(5).normal(size=(3, 4)).astype(dtype)
    np.testing.assert_array_equal(clone.forward(X), model.forward(X))  # the same arithmetic: exact
    saved = model.flat_parameters.copy()
    clone.flat_parameters[:] = 0.0
    clone.layers[0].W[...] = 1.0
    np.testing.assert_array_equal(model.flat_parameters, saved)


def test_all_finite():
    model = small_mlp()
    assert model.all_finite() is True
    for bad in (np.nan, np.inf, -np.inf):
        model = small_mlp()
        model.layers[-1].b[2] = bad
        assert model.all_finite() is False


# ------------------------------------------------------------ predictions in batches

@pytest.mark.parametrize("batch_size", [1, 3, 7, 2000])
def test_predictions_in_batches_equal_one_pass(batch_size):
    model = small_mlp()
    model.flat_parameters[:] = np.random.default_rng(0).normal(size=model.flat_parameters.size)  # rows of 2 classes
    X = np.random.default_rng(3).normal(size=(7, 4))
    expected = reference_logits(model, X)
    # float64, sums of at most 5 products of numbers below 10: errors near 1e-14, far inside 1e-12.
    np.testing.assert_allclose(model.predict_logits(X, batch_size), expected, rtol=1e-12, atol=1e-12)  # float64: see above
    shifted = np.exp(expected - expected.max(axis=1, keepdims=True))
    np.testing.assert_allclose(model.predict_proba(X, batch_size), shifted / shifted.sum(axis=1, keepdims=True),
                               rtol=1e-12, atol=1e-15)  # float64 as above, then exp and a division: a few ulps
    assert model.predict(X, batch_size).tolist() == expected.argmax(axis=1).tolist()
    assert len(set(expected.argmax(axis=1).tolist())) > 1  # not every row the same class


@pytest.mark.parametrize("method", ["predict_logits", "predict_proba", "predict"])
def test_predictions_pass_at_most_batch_size_rows_at_a_time(method):
    model = small_mlp()
    batches = []
    forward = model.forward
    model.forward = lambda X, training=False: batches.append(len(X)) or forward(X, training)
    X = np.zeros((2001, 4))
    getattr(model, method)(X, 3)
    assert batches == [3] * 667
    batches.clear()
    getattr(model, method)(X)  # by default 2000 rows, to bound memory
    assert batches == [2000, 1]

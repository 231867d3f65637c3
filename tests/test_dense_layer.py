"""DenseLayer: shapes, gradients against finite differences, no self-update, dropout."""

import numpy as np
import pytest

from conftest import assert_close_gradients, assert_close_sums, numerical_gradient
from dense_layer import DenseLayer

HIDDEN_ACTIVATIONS = ["relu", "leaky_relu", "tanh", "sigmoid", "gelu", "linear"]


def make_layer(activation, dropout=0.0, seed=0):
    return DenseLayer(4, 3, activation, np.random.default_rng(seed), dtype=np.float64, dropout=dropout)


def test_shapes_dtype_and_initialisation():
    layer = DenseLayer(784, 150, "relu", np.random.default_rng(0))
    assert layer.W.shape == (784, 150) and layer.b.shape == (150,)
    assert layer.W.dtype == np.float32 and not layer.b.any()
    # The relative error of the sample std of n normal draws is about 1 / sqrt(2 n): 0.2 % for
    # 117,600 and 150,000 draws, so 2 % is 10 of those, while the other formula is 9 % (He
    # layer) and 64 % (Glorot layer) away.
    assert layer.W.std() == pytest.approx(np.sqrt(2 / 784), rel=0.02)  # He
    glorot = DenseLayer(150, 1000, "linear", np.random.default_rng(0))
    assert glorot.W.std() == pytest.approx(np.sqrt(2 / 1150), rel=0.02)  # Glorot
    X = np.ones((7, 784), np.float32)
    assert layer.forward(X).shape == (7, 150) and layer.forward(X, training=True).shape == (7, 150)
    assert layer.backward(np.ones((7, 150), np.float32)).shape == (7, 784)


# He's std for the ReLU family (which passes on half the variance), Glorot's for the others,
# written here from the papers rather than read from functions.init_std.
EXPECTED_STD = {
    "relu": lambda n_in, n_out: np.sqrt(2 / n_in),
    "leaky_relu": lambda n_in, n_out: np.sqrt(2 / n_in),
    "gelu": lambda n_in, n_out: np.sqrt(2 / n_in),
    "tanh": lambda n_in, n_out: np.sqrt(2 / (n_in + n_out)),
    "sigmoid": lambda n_in, n_out: np.sqrt(2 / (n_in + n_out)),
    "linear": lambda n_in, n_out: np.sqrt(2 / (n_in + n_out)),
}


@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_initialisation_of_every_activation(activation):
    n_in, n_out = 600, 200
    layer = DenseLayer(n_in, n_out, activation, np.random.default_rng(3))
    std, n = EXPECTED_STD[activation](n_in, n_out), n_in * n_out
    assert not layer.b.any()
    # n = 120,000 normal draws: the sample std's relative error has std 1 / sqrt(2 n) = 0.2 % and
    # the mean's std is std / sqrt(n); 5 of each is 1 %, while He and Glorot differ by 15 % here.
    assert layer.W.std() == pytest.approx(std, rel=5 / np.sqrt(2 * n))  # see above
    assert abs(layer.W.mean()) < 5 * std / np.sqrt(n)  # see above


def test_unknown_activation_and_dropout_out_of_range_are_refused():
    with pytest.raises(ValueError, match="^unknown activation 'swish'; choose one of relu, leaky_relu, tanh, "
                                         "sigmoid, gelu, linear$"):
        DenseLayer(2, 2, "swish")
    for dropout in (1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=rf"^dropout must be in \[0, 1\), got {dropout}$"):
            DenseLayer(2, 2, dropout=dropout)


def test_defaults_and_the_runs_generator():
    layer = DenseLayer(3, 2)  # no generator given: a fresh one
    assert (layer.activation, layer.dropout, layer.W.dtype) == ("relu", 0.0, np.float32)
    assert layer.W.std() > 0
    same = [DenseLayer(30, 20, rng=np.random.default_rng(5), dropout=0.5) for _ in range(2)]
    assert np.array_equal(same[0].W, same[1].W), "the weights come from the generator handed over"
    X = np.ones((4, 30), np.float32)
    assert np.array_equal(same[0].forward(X, training=True), same[1].forward(X, training=True)), \
        "so do the dropout masks"


def test_logits_are_stored_column_by_column():
    # The softmax reduces each row of a few logits, 2-3 times faster when Z is column-major.
    X = np.ones((6, 4), np.float32)
    assert DenseLayer(4, 3, "linear").forward(X, training=True).flags.f_contiguous
    assert DenseLayer(4, 3, "relu").forward(X, training=True).flags.c_contiguous


@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_gradients_match_finite_differences(activation, dropout):
    layer = make_layer(activation, dropout)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(5, 4))
    R = rng.normal(size=(5, 3))  # loss = sum(A * R), so dL/dA = R

    def loss():
        layer.rng = np.random.default_rng(7)  # the same dropout mask on every call
        return float((layer.forward(X, training=True) * R).sum())

    loss()
    W_before = layer.W.copy()
    dX = layer.backward(R.copy())
    assert np.array_equal(layer.W, W_before), "backward must not update the weights"
    dW, db, dX = layer.dW.copy(), layer.db.copy(), dX.copy()
    assert_close_gradients(dW, numerical_gradient(loss, layer.W))
    assert_close_gradients(db, numerical_gradient(loss, layer.b))
    assert_close_gradients(dX, numerical_gradient(loss, X))


def test_dropout_is_inverted_and_off_at_evaluation():
    layer = DenseLayer(50, 400, "linear", np.random.default_rng(0), dropout=0.25)
    X = np.ones((64, 50), np.float32)
    train = layer.forward(X, training=True)
    expected = layer.forward(X)
    zeros = train == 0
    assert 0.2 < zeros.mean() < 0.3
    # Both compute X @ W + b, training into the layer's buffer and inference into a fresh
    # array: the same 50 products and a bias for each output, added in whatever order the
    # BLAS kernel chooses for each.
    magnitude = (np.abs(X) @ np.abs(layer.W) + np.abs(layer.b)) / 0.75
    assert_close_sums(train[~zeros], (expected / 0.75)[~zeros], magnitude[~zeros], n_terms=51)


def test_inference_leaves_training_buffers_alone():
    layer = make_layer("relu")
    X = np.random.default_rng(2).normal(size=(5, 4))
    A = layer.forward(X, training=True).copy()
    layer.forward(np.zeros((9, 4)))
    np.testing.assert_array_equal(layer.forward(X, training=True), A)


@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_keeps_the_dtype_and_reuses_its_buffers(activation, dtype):
    layer = DenseLayer(4, 3, activation, np.random.default_rng(0), dtype=dtype)
    X = np.random.default_rng(1).normal(size=(5, 4)).astype(dtype)
    A = layer.forward(X, training=True)
    assert A.dtype == dtype and layer.forward(X).dtype == dtype
    assert layer.forward(X, training=True) is A, "a training step with the same batch size allocates nothing"
    dX = layer.backward(np.ones_like(A))
    assert dX.dtype == dtype and layer.dW.dtype == dtype and layer.db.dtype == dtype
    assert layer.backward(np.ones_like(A)) is dX


def test_prediction_between_forward_and_backward_changes_nothing():
    layer = make_layer("tanh")
    rng = np.random.default_rng(2)
    X, dA = rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
    layer.forward(X, training=True)
    dX = layer.backward(dA.copy()).copy()
    dW, db = layer.dW.copy(), layer.db.copy()
    layer.forward(X, training=True)
    layer.forward(rng.normal(size=(9, 4)))  # another batch size, predicted in between
    # The same operations on the same numbers: exact.
    np.testing.assert_array_equal(layer.backward(dA.copy()), dX)
    np.testing.assert_array_equal(layer.dW, dW)
    np.testing.assert_array_equal(layer.db, db)

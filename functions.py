"""Activations, the loss and their derivatives: stateless maths, no weights.

Notation used in every docstring of the project:
    B       batch size (samples are rows)
    Z       pre-activation, shape (B, n)
    A       activation f(Z), shape (B, n)
    dA, dZ  gradients of the mean batch loss with respect to A and Z
    y       integer class labels, shape (B,)

Every function keeps the dtype of its input (float32 in training, float64 in the
gradient checks) and never promotes silently.
"""

import math

import numpy as np


# ---------------------------------------------------------------- activations
# Each derivative takes Z and A = f(Z): some are cheapest written through A.

def relu(Z, out=None):
    """max(Z, 0), elementwise. Shape of Z."""
    return np.maximum(Z, 0, out=out)


def relu_derivative(Z, A):
    """1 where Z > 0, else 0 (the subgradient at 0 is taken as 0). Shape of Z."""
    return (Z > 0).astype(Z.dtype)


LEAKY_SLOPE = 0.01


def leaky_relu(Z, out=None):
    """Z where Z > 0, else 0.01 * Z. Shape of Z."""
    return np.maximum(Z, LEAKY_SLOPE * Z, out=out)


def leaky_relu_derivative(Z, A):
    """1 where Z > 0, else 0.01. Shape of Z."""
    return np.where(Z > 0, 1, LEAKY_SLOPE).astype(Z.dtype)


def tanh(Z, out=None):
    """Hyperbolic tangent, elementwise. Shape of Z."""
    return np.tanh(Z, out=out)


def tanh_derivative(Z, A):
    """1 - tanh(Z)^2, written through A. Shape of Z."""
    return 1 - A * A


def sigmoid(Z, out=None):
    """1 / (1 + exp(-Z)), computed without overflow for large |Z|. Shape of Z."""
    # sigmoid(z) = (1 + tanh(z/2)) / 2 is exact and never overflows.
    A = np.tanh(Z * Z.dtype.type(0.5), out=out)
    A += 1
    A *= Z.dtype.type(0.5)
    return A


def sigmoid_derivative(Z, A):
    """sigmoid(Z) * (1 - sigmoid(Z)), written through A. Shape of Z."""
    return A * (1 - A)


_GELU_C = math.sqrt(2 / math.pi)


def gelu(Z, out=None):
    """Gaussian error linear unit, tanh approximation (Hendrycks & Gimpel):
    0.5 Z (1 + tanh(sqrt(2 / pi) (Z + 0.044715 Z^3))). Shape of Z.

    The constants are of Z's dtype, so float32 stays float32 at every step.
    """
    c = Z.dtype.type
    half_one_plus_t = np.tanh(c(_GELU_C) * (Z + c(0.044715) * Z ** 3))
    half_one_plus_t += 1
    half_one_plus_t *= c(0.5)
    return np.multiply(Z, half_one_plus_t, out=out)


def gelu_derivative(Z, A):
    """Derivative of the tanh approximation of GELU:
    0.5 (1 + t) + 0.5 Z (1 - t^2) sqrt(2 / pi) (1 + 3 * 0.044715 Z^2), t = tanh(...). Shape of Z."""
    c = Z.dtype.type
    t = np.tanh(c(_GELU_C) * (Z + c(0.044715) * Z ** 3))
    d_inner = c(_GELU_C) * (1 + c(3 * 0.044715) * Z ** 2)
    return c(0.5) * (1 + t) + c(0.5) * Z * (1 - t * t) * d_inner


def linear(Z, out=None):
    """The identity: used by the output layer, whose logits go to softmax."""
    if out is None or out is Z:
        return Z
    out[...] = Z
    return out


def linear_derivative(Z, A):
    """1 everywhere. Shape of Z."""
    return np.ones_like(Z)


# name -> (f, f'), the table layers and saved models refer to.
ACTIVATIONS = {
    "relu": (relu, relu_derivative),
    "leaky_relu": (leaky_relu, leaky_relu_derivative),
    "tanh": (tanh, tanh_derivative),
    "sigmoid": (sigmoid, sigmoid_derivative),
    "gelu": (gelu, gelu_derivative),
    "linear": (linear, linear_derivative),
}


def value_and_derivative(name, Z, A, D):
    """Write f(Z) into A and f'(Z) into D, for the activation called `name`.

    The training forward pass keeps D for the backward pass. ReLU, the default,
    takes a shortcut that costs two cheap passes instead of a slower np.maximum
    and a comparison: D = (Z > 0), then A = Z * D (a NaN in Z stays NaN in A).
    """
    if name == "relu":
        np.greater(Z, 0, out=D)
        np.multiply(Z, D, out=A)
        return
    f, f_prime = ACTIVATIONS[name]
    f(Z, out=A)
    D[...] = f_prime(Z, A)


def init_std(activation, n_in, n_out):
    """Standard deviation of the normal initial weights of a layer.

    He (sqrt(2 / n_in)) for the ReLU family, which halves the variance it passes
    on; Glorot (sqrt(2 / (n_in + n_out))) for the others (tanh, sigmoid, and the
    linear output layer). Biases start at zero.
    """
    if activation in ("relu", "leaky_relu", "gelu"):
        return math.sqrt(2.0 / n_in)
    return math.sqrt(2.0 / (n_in + n_out))


# ------------------------------------------------------- softmax and the loss

def log_softmax(Z):
    """log(softmax(Z)) row by row, stable for any finite logits. Shape (B, C).

    Uses log-sum-exp with the row maximum subtracted, so exp never overflows.
    """
    shifted = Z - Z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(Z):
    """Class probabilities, each row summing to 1, stable for any finite logits. Shape (B, C)."""
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    E /= E.sum(axis=1, keepdims=True)
    return E


def cross_entropy(Z, y):
    """Mean cross-entropy of logits Z (B, C) against labels y (B,): a Python float.

    Computed from the logits through log_softmax, never as log(softmax), so that
    a confident wrong answer gives a large finite loss instead of log(0).
    """
    B = Z.shape[0]
    return float(-log_softmax(Z)[np.arange(B), y].mean(dtype=np.float64))


def softmax_cross_entropy(Z, y):
    """Loss and gradient of softmax + cross-entropy, fused. Returns (loss, dZ).

    loss: mean cross-entropy over the batch, a Python float.
    dZ:   (softmax(Z) - onehot(y)) / B, shape (B, C), dtype and memory order of
          Z. This is the one place where the gradient is divided by the batch
          size: every gradient downstream (dW, db of every layer) is thereby of
          the *mean* loss.
    """
    B = Z.shape[0]
    rows = np.arange(B)
    shifted = Z - Z.max(axis=1, keepdims=True)
    true_class = shifted[rows, y]
    E = np.exp(shifted, out=shifted)
    sums = E.sum(axis=1, keepdims=True)
    loss = (float(np.log(sums).sum(dtype=np.float64)) - float(true_class.sum(dtype=np.float64))) / B
    one_over_B = Z.dtype.type(1 / B)
    E *= one_over_B / sums
    E[rows, y] -= one_over_B
    return loss, E

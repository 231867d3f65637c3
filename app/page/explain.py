"""Why the network decided: saliency maps from the network's own backward pass.

The saliency of digit c for an input x (784 pixels) is the gradient of
log p(c | x) with respect to the pixels: positive where more ink would make c
more likely, negative where more ink would make it less likely. It is computed
by MLP.backward, the code that trains the network, started from the gradient of
log p(c) with respect to the logits Z instead of the gradient of the loss:

    log p(c) = Z_c - log sum_k exp(Z_k),   so   d log p(c) / dZ = onehot(c) - softmax(Z).

(The training loss is -log p(label) / B: its gradient is the same up to sign and
the division by B.)
"""

import numpy as np

from functions import log_softmax, softmax


def saliency(model, x, digit):
    """(gradient (n_inputs,), log p(digit)) for one input x (n_inputs,) of `model`.

    gradient[i] = d log p(digit | x) / d x[i], in the dtype of the model's weights.
    Uses the model's training buffers (a training-mode forward and backward pass),
    so one model must not explain two inputs at once (server.py holds a lock); the
    weights are not changed, and a model with dropout is explained without it.
    """
    X = np.asarray(x, dtype=model.flat_parameters.dtype).reshape(1, -1)
    dropout = [layer.dropout for layer in model.layers]
    for layer in model.layers:
        layer.dropout = 0.0
    try:
        Z = model.forward(X, training=True).copy()
        probabilities = softmax(Z)
        dZ = -probabilities
        # 1 - p(digit) as the sum of the other probabilities, never by subtraction: for a digit
        # read with near certainty p rounds to 1 in float32, and 1 - p came out 0 or one float32
        # step (1.2e-7) when it was 1e-10, a map of rounding noise; each other p is known to a
        # few float32 steps of itself, and so is their sum.
        dZ[0, digit] = np.delete(probabilities[0], digit).sum()
        gradient = model.backward(dZ, need_input_gradient=True)[0].copy()
    finally:
        for layer, rate in zip(model.layers, dropout):
            layer.dropout = rate
    return gradient, float(log_softmax(Z)[0, digit])

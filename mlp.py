"""MLP: a stack of DenseLayers, forward and backward through them, and the update.
(Its file, to save and load it, is app/model_file.py.)"""

import numpy as np

from dense_layer import DenseLayer
from functions import softmax


class MLP:
    """A multi-layer perceptron for classification: hidden DenseLayers, then a
    linear output layer whose logits go through softmax.

    layer_sizes: [n_inputs, hidden..., n_classes], e.g. [784, 150, 150, 10].
    activations: one name per layer, the last one "softmax", e.g.
        ["relu", "relu", "softmax"] (the default: ReLU for every hidden layer).
        The softmax is not applied inside the network: ``forward`` returns the
        logits Z (B, C), the loss works from them (functions.softmax_cross_entropy)
        and ``predict_proba`` applies it.
    rng: the np.random.Generator of the run, used for initialisation and dropout.
    dropout: dropout rate on the outputs of the hidden layers while training.
    """

    def __init__(self, layer_sizes, activations=None, rng=None, dtype=np.float32, dropout=0.0):
        layer_sizes = [int(n) for n in layer_sizes]
        if len(layer_sizes) < 2 or min(layer_sizes) < 1:
            raise ValueError(f"layer_sizes must hold at least two positive sizes, got {layer_sizes}")
        n_layers = len(layer_sizes) - 1
        if activations is None:
            activations = ["relu"] * (n_layers - 1) + ["softmax"]
        activations = list(activations)
        if len(activations) != n_layers or activations[-1] != "softmax":
            raise ValueError(f"need {n_layers} activation names ending with 'softmax', got {activations}")
        rng = rng if rng is not None else np.random.default_rng()
        self.layer_sizes = layer_sizes
        self.activations = activations
        self.layers = [
            DenseLayer(n_in, n_out, "linear" if name == "softmax" else name, rng, dtype,
                       dropout=0.0 if name == "softmax" else dropout)
            for n_in, n_out, name in zip(layer_sizes[:-1], layer_sizes[1:], activations)
        ]
        self._gather_parameters(dtype)

    def _gather_parameters(self, dtype):
        """Move every weight and bias into one flat array, and every gradient into another.

        Each layer keeps its W (as n_in * n_out numbers, row by row) and then its b
        in a slice of the flat array, in the order of ``parameters()``; layer.W,
        layer.b, layer.dW and layer.db are views of those slices, so layers work
        as before, while an optimizer updates all the parameters with a few
        whole-array operations instead of a few per layer: on a network this
        small, the per-call overhead is what counts.
        """
        sizes = [layer.W.size + layer.b.size for layer in self.layers]
        self.flat_parameters = np.empty(sum(sizes), dtype)
        self.flat_gradients = np.zeros(sum(sizes), dtype)
        offset = 0
        for layer, size in zip(self.layers, sizes):
            layer.use_storage(self.flat_parameters[offset:offset + size], self.flat_gradients[offset:offset + size])
            offset += size

    # ------------------------------------------------------------ the maths

    def forward(self, X, training=False):
        """Logits Z of the last layer, shape (B, n_classes), for inputs X (B, n_inputs)."""
        for layer in self.layers:
            X = layer.forward(X, training)
        return X

    def backward(self, dZ, weight_decay=0.0, need_input_gradient=False):
        """Backpropagate dZ, the gradient of the loss with respect to the logits (B, C).

        Every layer stores its dW and db; nothing is updated. weight_decay adds
        the gradient of the L2 penalty (weight_decay / 2) * sum(W ** 2) to every dW
        (biases are not decayed). dZ is overwritten.

        Returns None, or with need_input_gradient=True the first layer's dX
        (B, n_inputs): the gradient with respect to the inputs X of the last
        ``forward(X, training=True)``. Training never needs it and skips that
        product; explain.py asks for it to show which pixels drove a decision.
        The array is a buffer of the layer, valid until its next training pass.
        """
        for index in range(len(self.layers) - 1, -1, -1):
            dZ = self.layers[index].backward(dZ, need_dX=index > 0 or need_input_gradient)
        if weight_decay:
            for layer in self.layers:
                layer.dW += layer.W.dtype.type(weight_decay) * layer.W
        return dZ

    def parameters(self):
        """The arrays that training changes, as views: [W0, b0, W1, b1, ...]."""
        return [array for layer in self.layers for array in (layer.W, layer.b)]

    def update(self, optimizer, learning_rate):
        """Apply one step of ``optimizer`` (see optimizers.py) with the stored gradients:
        it sees the flat parameter and gradient arrays, nothing else."""
        optimizer.step([self.flat_parameters], [self.flat_gradients], learning_rate)

    def copy(self):
        """A new MLP with the same layer sizes, activations, dtype and weights, copied
        (changing one never changes the other); no training buffers or dropout."""
        clone = MLP(self.layer_sizes, self.activations, rng=np.random.default_rng(0),
                    dtype=self.flat_parameters.dtype)
        clone.flat_parameters[...] = self.flat_parameters
        return clone

    def all_finite(self):
        """True when every weight and bias is a finite number."""
        return bool(np.isfinite(self.flat_parameters).all())

    # ------------------------------------------------------------ inference

    def predict_logits(self, X, batch_size=2000):
        """Logits (N, C) for inputs X (N, n_inputs), computed in batches to bound memory."""
        return np.concatenate([self.forward(X[start:start + batch_size])
                               for start in range(0, len(X), batch_size)])

    def predict_proba(self, X, batch_size=2000):
        """Class probabilities (N, C), each row summing to 1."""
        return softmax(self.predict_logits(X, batch_size))

    def predict(self, X, batch_size=2000):
        """Most likely class of each row of X, shape (N,)."""
        return self.predict_logits(X, batch_size).argmax(axis=1)

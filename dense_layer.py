"""DenseLayer: one fully connected layer, A = f(X @ W + b), and its backward pass."""

import numpy as np

from functions import ACTIVATIONS, init_std, value_and_derivative


class DenseLayer:
    """A fully connected layer with its weights, its forward pass and its backward pass.

    Shapes (samples are rows): X (B, n_in), W (n_in, n_out), b (n_out,),
    Z = X @ W + b and A = f(Z), both (B, n_out).

        forward:   Z = X @ W + b          A = f(Z)
        backward:  dZ = dA * f'(Z)        dW = X.T @ dZ    db = dZ.sum(0)    dX = dZ @ W.T

    The layer never updates itself: ``backward`` stores the gradients ``dW`` and
    ``db`` and returns ``dX``; whoever owns the layers (the MLP, through its
    optimizer) applies the update. That keeps the layer gradient-checkable and
    the optimizer replaceable.

    Training passes write into buffers sized for the batch, so a step allocates
    nothing (but dropout's random mask); prediction (``training=False``) computes the same formula into fresh
    arrays and keeps no state.
    """

    def __init__(self, n_in, n_out, activation="relu", rng=None, dtype=np.float32, dropout=0.0):
        """Weights drawn from N(0, init_std(activation)^2), biases zero.

        rng: the np.random.Generator of the run (initialisation and dropout masks).
        dropout: probability of zeroing each output during training (inverted
        dropout: the survivors are scaled by 1 / (1 - dropout), so evaluation
        needs no change).
        """
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.rng = rng if rng is not None else np.random.default_rng()
        self.activation = activation
        self.dropout = dropout
        self._f = ACTIVATIONS[activation][0]
        self.W = (self.rng.standard_normal((n_in, n_out)) * init_std(activation, n_in, n_out)).astype(dtype)
        self.b = np.zeros(n_out, dtype)
        self.dW, self.db = np.zeros_like(self.W), np.zeros_like(self.b)
        self._batch_size = None

    def use_storage(self, parameters, gradients):
        """Keep W and b in ``parameters``, dW and db in ``gradients`` from now on: two
        flat arrays of n_in * n_out + n_out numbers (W row by row, then b), possibly
        slices of larger ones (see MLP). The current W and b are copied in; the four
        names become views of the two arrays."""
        n_weights = self.W.size
        W, b = parameters[:n_weights].reshape(self.W.shape), parameters[n_weights:]
        W[...], b[...] = self.W, self.b
        self.W, self.b = W, b
        self.dW, self.db = gradients[:n_weights].reshape(self.W.shape), gradients[n_weights:]

    @property
    def n_in(self):
        return self.W.shape[0]

    @property
    def n_out(self):
        return self.W.shape[1]

    def _allocate(self, batch_size):
        """(Re)allocate the training buffers for batches of this size.

        A linear layer's Z is its output, the logits in an MLP, whose softmax
        reduces each row of a few classes: Z is then stored column by column
        (order "F"), which makes those reductions 2-3 times faster.
        """
        dtype = self.W.dtype
        self._Z = np.empty((batch_size, self.n_out), dtype, order="F" if self.activation == "linear" else "C")
        self._A = np.empty((batch_size, self.n_out), dtype)
        self._D = np.empty((batch_size, self.n_out), dtype)
        self._dX = np.empty((batch_size, self.n_in), dtype)
        self._batch_size = batch_size

    def forward(self, X, training=False):
        """A = f(X @ W + b), shape (B, n_out).

        training=True also keeps X (a reference: it must not change before
        ``backward``) and f'(Z) for ``backward``, applies dropout, and returns one
        of the layer's buffers, valid until its next training pass.
        """
        if training and X.shape[0] != self._batch_size:
            self._allocate(X.shape[0])
        Z = np.matmul(X, self.W, out=self._Z if training else None)
        Z += self.b                                                   # Z = X @ W + b
        if not training:
            return self._f(Z, out=Z)                                  # A = f(Z)
        self._X = X
        self._has_D = self.activation != "linear" or bool(self.dropout)
        if not self._has_D:
            return Z                                                  # A = Z
        value_and_derivative(self.activation, Z, self._A, self._D)    # A = f(Z), D = f'(Z)
        if self.dropout:
            keep = self.rng.random(self._D.shape, dtype=self._D.dtype) < 1 - self.dropout
            keep = keep * self._D.dtype.type(1 / (1 - self.dropout))
            self._A *= keep
            self._D *= keep  # dZ = dA * keep * f'(Z): the backward pass needs the product only
        return self._A

    def backward(self, dA, need_dX=True):
        """Store dW (n_in, n_out) and db (n_out,); return dX (B, n_in), or None.

        dA is the gradient of the loss with respect to this layer's output, shape
        (B, n_out); it is overwritten with dZ. need_dX=False skips the product
        that the first layer would compute for nobody.
        """
        dZ = dA
        if self._has_D:
            dZ *= self._D                                             # dZ = dA * f'(Z)
        np.matmul(self._X.T, dZ, out=self.dW)                         # dW = X.T @ dZ
        np.sum(dZ, axis=0, out=self.db)                               # db = dZ.sum(0)
        if not need_dX:
            return None
        return np.matmul(dZ, self.W.T, out=self._dX)                  # dX = dZ @ W.T

"""DenseLayer: one fully connected layer, A = f(X @ W + b)."""

import numpy as np

from functions import ACTIVATIONS, init_std


class DenseLayer:
    """A fully connected layer with its weights, its forward pass and its backward pass.

    Shapes (samples are rows): X (B, n_in), W (n_in, n_out), b (n_out,),
    Z = X @ W + b and A = f(Z), both (B, n_out).

    The layer never updates itself: ``backward`` stores the gradients ``dW`` and
    ``db`` and returns ``dX``; whoever owns the layers (the MLP, through its
    optimizer) applies the update. That keeps the layer gradient-checkable and
    the optimizer replaceable.

    Training passes reuse buffers sized for the batch, so a step allocates almost
    nothing; inference passes (``training=False``) allocate fresh arrays and keep
    no state.
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
        self._f, self._f_prime = ACTIVATIONS[activation]
        std = init_std(activation, n_in, n_out)
        self.W = (self.rng.standard_normal((n_in, n_out)) * std).astype(dtype)
        self.b = np.zeros(n_out, dtype=dtype)
        self.dW = np.zeros_like(self.W)
        self.db = np.zeros_like(self.b)
        self._batch_size = None

    @property
    def n_in(self):
        return self.W.shape[0]

    @property
    def n_out(self):
        return self.W.shape[1]

    def _allocate(self, batch_size):
        """(Re)allocate the training buffers Z, A and dX for batches of this size."""
        dtype = self.W.dtype
        self._Z = np.empty((batch_size, self.n_out), dtype)
        self._A = np.empty((batch_size, self.n_out), dtype)
        self._dX = np.empty((batch_size, self.n_in), dtype)
        self._ones = np.ones(batch_size, dtype)
        if self.dropout:
            self._keep = np.empty((batch_size, self.n_out), dtype)
            self._A_dropped = np.empty((batch_size, self.n_out), dtype)
        self._batch_size = batch_size

    def forward(self, X, training=False):
        """A = f(X @ W + b), shape (B, n_out).

        With training=True the layer remembers X, Z and A for ``backward``,
        applies dropout, and returns its own buffer (valid until the next call).
        """
        if not training:
            Z = X @ self.W
            Z += self.b
            return self._f(Z, out=Z)
        if X.shape[0] != self._batch_size:
            self._allocate(X.shape[0])
        np.matmul(X, self.W, out=self._Z)
        self._Z += self.b
        A = self._Z if self.activation == "linear" else self._f(self._Z, out=self._A)
        if self.dropout:
            keep = self._keep
            np.less(self.rng.random(keep.shape, dtype=keep.dtype), 1 - self.dropout, out=keep)
            keep *= keep.dtype.type(1 / (1 - self.dropout))
            A = np.multiply(A, keep, out=self._A_dropped)
        self._X = X
        return A

    def backward(self, dA, need_dX=True):
        """Store dW (n_in, n_out) and db (n_out,); return dX (B, n_in), or None.

        dA is the gradient of the loss with respect to this layer's output, shape
        (B, n_out); it is overwritten with dZ. need_dX=False skips the product
        that the first layer would compute for nobody.
        """
        dZ = dA
        if self.dropout:
            dZ *= self._keep
        if self.activation != "linear":
            dZ *= self._f_prime(self._Z, self._A)
        np.matmul(self._X.T, dZ, out=self.dW)
        np.matmul(self._ones, dZ, out=self.db)  # the column sums of dZ, as one BLAS call
        if not need_dX:
            return None
        return np.matmul(dZ, self.W.T, out=self._dX)

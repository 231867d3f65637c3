"""DenseLayer: one fully connected layer, A = f(X @ W + b)."""

import numpy as np

from functions import ACTIVATIONS, init_std, value_and_derivative


class DenseLayer:
    """A fully connected layer with its weights, its forward pass and its backward pass.

    Shapes (samples are rows): X (B, n_in), W (n_in, n_out), b (n_out,),
    Z = X @ W + b and A = f(Z), both (B, n_out).

    W and b are stored together, as the rows of one array Wb (n_in + 1, n_out)
    whose last row is b, so that X @ W + b is a single matrix product: the
    training inputs carry an extra column of ones, [X 1] @ Wb. The backward
    product [X 1].T @ dZ then yields dW and db (the column sums of dZ) together.

    The layer never updates itself: ``backward`` stores the gradients ``dW`` and
    ``db`` and returns ``dX``; whoever owns the layers (the MLP, through its
    optimizer) applies the update. That keeps the layer gradient-checkable and
    the optimizer replaceable.

    Training passes reuse buffers sized for the batch, so a step allocates
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
        self._f = ACTIVATIONS[activation][0]
        self.Wb = np.zeros((n_in + 1, n_out), dtype)
        self.Wb[:-1] = self.rng.standard_normal((n_in, n_out)) * init_std(activation, n_in, n_out)
        self.use_storage(self.Wb, np.zeros_like(self.Wb))
        self._batch_size = None

    def use_storage(self, Wb, dWb):
        """Keep the parameters in Wb and the gradients in dWb from now on: two
        (n_in + 1, n_out) arrays, possibly views of larger ones (see MLP). The
        current parameters are copied in; W, b, dW and db become views of them."""
        Wb[...] = self.Wb
        self.Wb, self.dWb = Wb, dWb
        self.W, self.b = Wb[:-1], Wb[-1]
        self.dW, self.db = dWb[:-1], dWb[-1]

    @property
    def n_in(self):
        return self.W.shape[0]

    @property
    def n_out(self):
        return self.W.shape[1]

    def _allocate(self, batch_size):
        """(Re)allocate the training buffers for batches of this size.

        [X 1] keeps its column of ones from one batch to the next. A linear
        layer's Z is its output, the logits in an MLP, whose softmax reduces each
        row of a few classes: Z is then stored column by column (order "F"),
        which makes those reductions 2-3 times faster.
        """
        dtype = self.W.dtype
        self._X1 = np.ones((batch_size, self.n_in + 1), dtype)
        self._Z = np.empty((batch_size, self.n_out), dtype, order="F" if self.activation == "linear" else "C")
        self._A = np.empty((batch_size, self.n_out), dtype)
        self._D = np.empty((batch_size, self.n_out), dtype)
        self._dX = np.empty((batch_size, self.n_in), dtype)
        self._batch_size = batch_size

    def forward(self, X, training=False):
        """A = f(X @ W + b), shape (B, n_out).

        With training=True the layer keeps [X 1] and f'(Z) for ``backward``,
        applies dropout, and returns one of its buffers (valid until the next
        call).
        """
        if not training:
            Z = X @ self.W
            Z += self.b
            return self._f(Z, out=Z)
        if X.shape[0] != self._batch_size:
            self._allocate(X.shape[0])
        self._X1[:, :-1] = X
        np.matmul(self._X1, self.Wb, out=self._Z)
        self._has_D = self.activation != "linear" or bool(self.dropout)
        if not self._has_D:
            return self._Z
        value_and_derivative(self.activation, self._Z, self._A, self._D)
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
            dZ *= self._D
        np.matmul(self._X1.T, dZ, out=self.dWb)  # [dW; db]: the column of ones sums dZ into db
        if not need_dX:
            return None
        return np.matmul(dZ, self.W.T, out=self._dX)

"""MLP: a stack of DenseLayers, forward and backward through them, the update, save and load."""

import json

import numpy as np

from atomic import atomic_write
from dense_layer import DenseLayer
from functions import ACTIVATIONS, softmax

FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file that is not a readable, consistent file of our format."""


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

        Each layer keeps its [W; b] (n_in + 1, n_out) as a view of a slice of the
        flat array, W first, then b (the order of ``parameters()``), so layers work
        exactly as before, while an optimizer updates all the parameters with a
        few whole-array operations instead of a few per layer: on a network this
        small, the per-call overhead is what counts.
        """
        sizes = [layer.Wb.size for layer in self.layers]
        self.flat_parameters = np.empty(sum(sizes), dtype)
        self.flat_gradients = np.zeros(sum(sizes), dtype)
        offset = 0
        for layer, size in zip(self.layers, sizes):
            shape = layer.Wb.shape
            layer.use_storage(self.flat_parameters[offset:offset + size].reshape(shape),
                              self.flat_gradients[offset:offset + size].reshape(shape))
            offset += size

    # ------------------------------------------------------------ the maths

    def forward(self, X, training=False):
        """Logits Z of the last layer, shape (B, n_classes), for inputs X (B, n_inputs)."""
        for layer in self.layers:
            X = layer.forward(X, training)
        return X

    def backward(self, dZ, weight_decay=0.0):
        """Backpropagate dZ, the gradient of the loss with respect to the logits (B, C).

        Every layer stores its dW and db; nothing is updated. weight_decay adds
        the gradient of the L2 penalty (weight_decay / 2) * sum(W ** 2) to every dW
        (biases are not decayed). dZ is overwritten.
        """
        for index in range(len(self.layers) - 1, -1, -1):
            dZ = self.layers[index].backward(dZ, need_dX=index > 0)
        if weight_decay:
            for layer in self.layers:
                layer.dW += layer.W.dtype.type(weight_decay) * layer.W

    def parameters(self):
        """The arrays that training changes, as views: [W0, b0, W1, b1, ...]."""
        return [array for layer in self.layers for array in (layer.W, layer.b)]

    def update(self, optimizer, learning_rate):
        """Apply one step of ``optimizer`` (see optimizers.py) with the stored gradients:
        it sees the flat parameter and gradient arrays, nothing else."""
        optimizer.step([self.flat_parameters], [self.flat_gradients], learning_rate)

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

    # --------------------------------------------------------- save and load

    def save(self, path, config=None, steps_done=0, history=None):
        """Write the model to ``path`` (.npz), atomically.

        The file holds, with no pickled object: format_version, layer_sizes,
        activations, steps_done, the training configuration as JSON text,
        layer{i}.weights (n_in, n_out) / layer{i}.bias (n_out,) for each layer,
        and the training history (so that a resumed run continues its curves):
        history_losses, the loss of each step, and history_json, the step of the
        first of them and the evaluations made.
        history: {"loss_steps": [consecutive steps], "losses": [...], "evaluations": [...]}.
        """
        history = history or {"loss_steps": [], "losses": [], "evaluations": []}
        first_step = history["loss_steps"][0] if history["loss_steps"] else steps_done + 1
        arrays = {
            "format_version": np.array(FORMAT_VERSION),
            "layer_sizes": np.array(self.layer_sizes, dtype=np.int64),
            "activations": np.array(self.activations),
            "steps_done": np.array(steps_done, dtype=np.int64),
            "config_json": np.array(json.dumps(config or {}, sort_keys=True)),
            "history_losses": np.asarray(history["losses"], dtype=np.float32),
            "history_json": np.array(json.dumps({"first_loss_step": first_step,
                                                 "evaluations": history["evaluations"]})),
        }
        for index, layer in enumerate(self.layers):
            arrays[f"layer{index}.weights"] = layer.W
            arrays[f"layer{index}.bias"] = layer.b
        with atomic_write(path) as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path, with_info=False):
        """Rebuild a saved model. Raises ModelFileError for anything but a consistent
        file of our format; never unpickles (allow_pickle=False).

        Returns the MLP, or (MLP, info) with with_info=True, where info is
        {"config": dict, "steps_done": int, "history": dict as given to save}.
        """
        def fail(reason):
            raise ModelFileError(f"{path}: not a usable model file: {reason}")

        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        except FileNotFoundError:
            raise ModelFileError(f"{path}: no such model file") from None
        except Exception as error:  # not a zip, truncated, bad CRC, a pickle, ...: all refused
            fail(f"cannot be read as .npz ({type(error).__name__}: {error})")
        if not isinstance(arrays, dict):
            fail("not an .npz archive")
        for key in ("format_version", "layer_sizes", "activations", "steps_done", "config_json",
                    "history_losses", "history_json"):
            if key not in arrays:
                fail(f"missing {key!r}")
        if arrays["format_version"].shape != () or int(arrays["format_version"]) != FORMAT_VERSION:
            fail(f"format version {arrays['format_version']}, this program reads version {FORMAT_VERSION}")
        sizes = arrays["layer_sizes"]
        activations = arrays["activations"]
        if sizes.ndim != 1 or sizes.dtype.kind not in "iu" or len(sizes) < 2 or sizes.min() < 1:
            fail(f"bad layer_sizes {sizes}")
        if activations.dtype.kind != "U" or activations.shape != (len(sizes) - 1,):
            fail("activations do not match layer_sizes")
        activations = [str(name) for name in activations]
        if activations[-1] != "softmax" or any(name not in ACTIVATIONS for name in activations[:-1]):
            fail(f"unknown activations {activations}")
        try:
            config = json.loads(str(arrays["config_json"]))
            steps_done = int(arrays["steps_done"])
            saved_history = json.loads(str(arrays["history_json"]))
            losses = arrays["history_losses"].astype(np.float64).tolist()
            first = int(saved_history["first_loss_step"])
            history = {"loss_steps": list(range(first, first + len(losses))), "losses": losses,
                       "evaluations": list(saved_history["evaluations"])}
        except (ValueError, TypeError, KeyError) as error:
            fail(f"bad configuration or history ({error})")
        if not isinstance(config, dict):
            fail("configuration is not a JSON object")
        model = cls(sizes.tolist(), activations, rng=np.random.default_rng(0))
        for index, layer in enumerate(model.layers):
            for name, target in (("weights", layer.W), ("bias", layer.b)):
                key = f"layer{index}.{name}"
                if key not in arrays:
                    fail(f"missing {key!r}")
                value = arrays[key]
                if value.shape != target.shape or value.dtype.kind != "f":
                    fail(f"{key} has shape {value.shape} and dtype {value.dtype}, expected {target.shape} floats")
                if not np.isfinite(value).all():
                    fail(f"{key} holds NaN or infinite values")
                target[...] = value
        if len(arrays) != 7 + 2 * len(model.layers):
            fail("unexpected extra arrays")
        return (model, {"config": config, "steps_done": steps_done, "history": history}) if with_info else model

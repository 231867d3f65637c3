"""MLP: a stack of DenseLayers, forward and backward through them, the update, save and load."""

import json
import math
import zipfile
import zlib

import numpy as np

from app.atomic import atomic_write
from dense_layer import DenseLayer
from functions import ACTIVATIONS, softmax
from optimizers import OPTIMIZERS

FORMAT_VERSION = 1

# Limits of what a model file may declare, checked before anything is decompressed.
MAX_LAYERS = 64                  # layer_sizes has at most MAX_LAYERS + 1 entries
MAX_PARAMETERS = 1 << 25         # weights and biases in all (128 MiB as float32; --preset best has 1.3 M)
MAX_COMPRESSION = 10             # MLP.save stores members uncompressed; a member packed more tightly
                                 # than 1:10 (zeros declared by the gigabyte) is refused unread
MAX_LENGTH = 1 << 24             # a member of variable length (None in the table): entries
MAX_TEXT_CHARS = 1 << 24         # a text member (kind "U"): characters per string (4 bytes each)
NPY_HEADER_LIMIT = 10_000        # bytes of a member's .npy header (NumPy's own default limit)


def model_file_members(layer_sizes):
    """{member name: (dtype kinds, shape)}: everything a model file of these layer
    sizes may hold, the one table of the file format.

    MLP.load refuses any other member, and checks each member's declared
    uncompressed size and its .npy header against its entry before reading the
    data, so that a file cannot make loading use more memory than the model
    needs. kinds: NumPy dtype kinds allowed ("f" float, "iu" integer, "U" text);
    shape: a tuple whose None entries are lengths of up to MAX_LENGTH. New
    members go here; their shapes may follow from layer_sizes.
    """
    n_layers = len(layer_sizes) - 1
    members = {
        "format_version": ("iu", ()),
        "layer_sizes": ("iu", (n_layers + 1,)),
        "activations": ("U", (n_layers,)),
        "steps_done": ("iu", ()),
        "config_json": ("U", ()),
        "history_losses": ("f", (None,)),
        "history_json": ("U", ()),
    }
    for index, (n_in, n_out) in enumerate(zip(layer_sizes[:-1], layer_sizes[1:])):
        members[f"layer{index}.weights"] = ("f", (n_in, n_out))
        members[f"layer{index}.bias"] = ("f", (n_out,))
    # The training state (see MLP.save), members of OPTIONAL_MEMBERS: the optimizer's
    # arrays have the shape of all the parameters in one flat array.
    n_parameters = sum((n_in + 1) * n_out for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:]))
    members[TRAINING_STATE_MEMBER] = ("U", ())
    members[EPOCH_ORDER_MEMBER] = ("iu", (None,))
    for name in OPTIMIZER_MEMBERS:
        members[name] = ("f", (n_parameters,))
    return members


TRAINING_STATE_MEMBER = "training_state_json"
EPOCH_ORDER_MEMBER = "epoch_order"  # only when a run stopped inside an epoch
OPTIMIZER_MEMBER_PREFIX = "optimizer."
OPTIMIZER_MEMBERS = ("optimizer.velocity.0", "optimizer.m.0", "optimizer.s.0")  # momentum; Adam
# Members a model file may leave out: files written before the training state was
# saved, by MLP.save without one, or with an optimizer that keeps no arrays.
OPTIONAL_MEMBERS = (TRAINING_STATE_MEMBER, EPOCH_ORDER_MEMBER, *OPTIMIZER_MEMBERS)


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

    # --------------------------------------------------------- save and load

    def save(self, path, config=None, steps_done=0, history=None, training_state=None):
        """Write the model to ``path`` (.npz), atomically.

        The file holds, with no pickled object: format_version, layer_sizes,
        activations, steps_done, the training configuration as JSON text,
        layer{i}.weights (n_in, n_out) / layer{i}.bias (n_out,) for each layer,
        and the training history (so that a resumed run continues its curves):
        history_losses, the loss of each step, and history_json, the step of the
        first of them and the evaluations made.
        history: {"loss_steps": [consecutive steps], "losses": [...], "evaluations": [...]}.
        training_state (optional, from nn.train): {"schedule_steps": the steps the
        learning-rate schedule was built for, "generator": the generator's
        bit_generator.state or None, "optimizer": its name or None, "optimizer_numbers":
        {...}, "optimizer_arrays": {name: array (P,)}, "epoch_order": the permutation
        (N,) of the epoch in progress or None}; written as training_state_json, and
        epoch_order and optimizer.NAME arrays when there are some.
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
        if training_state is not None:
            arrays.update(_training_state_members(training_state))
        with atomic_write(path) as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path, with_info=False):
        """Rebuild a saved model. Raises ModelFileError for anything but a consistent
        file of our format; never unpickles, and decompresses nothing that
        model_file_members does not allow (see _read_members).

        Returns the MLP, or (MLP, info) with with_info=True, where info is
        {"config": dict, "steps_done": int, "history": dict as given to save,
        "training_state": dict as given to save, or None when the file has none}.
        """
        def fail(reason):
            raise ModelFileError(f"{path}: not a usable model file: {reason}")

        try:
            archive = zipfile.ZipFile(path)
        except FileNotFoundError:
            raise ModelFileError(f"{path}: no such model file") from None
        except zipfile.BadZipFile:
            raise ModelFileError(f"{path}: not a model file (not an .npz archive)") from None
        except OSError as error:
            raise ModelFileError(f"{path}: cannot read ({error.strerror or error})") from None
        with archive:
            arrays = _read_members(archive, fail)
        if arrays["format_version"].shape != () or int(arrays["format_version"]) != FORMAT_VERSION:
            fail(f"format version {arrays['format_version']}, this program reads version {FORMAT_VERSION}")
        sizes = arrays["layer_sizes"]  # checked, with the shapes of all members, by _read_members
        activations = [str(name) for name in arrays["activations"]]
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
            if steps_done < 0 or first < 1:
                raise ValueError(f"steps_done {steps_done} and first_loss_step {first} must be 0 and 1 or more")
            if not all(isinstance(e, dict) and type(e.get("step")) is int for e in history["evaluations"]):
                raise ValueError("every evaluation needs a whole-number step")
        except (ValueError, TypeError, KeyError, OverflowError) as error:
            fail(f"bad configuration or history ({error})")
        if not isinstance(config, dict):
            fail("configuration is not a JSON object")
        model = cls(sizes.tolist(), activations, rng=np.random.default_rng(0))
        for index, layer in enumerate(model.layers):
            for name, target in (("weights", layer.W), ("bias", layer.b)):
                key = f"layer{index}.{name}"
                value = arrays[key]
                if not np.isfinite(value).all():
                    fail(f"{key} holds NaN or infinite values")
                target[...] = value
        try:
            training_state = _read_training_state(arrays)
        except (ValueError, TypeError, KeyError, OverflowError) as error:
            fail(f"bad training state ({error})")
        info = {"config": config, "steps_done": steps_done, "history": history, "training_state": training_state}
        return (model, info) if with_info else model


def _training_state_members(state):
    """The model-file members for a training_state (see MLP.save): plain JSON and arrays."""
    numbers = {key: state[key] for key in ("schedule_steps", "generator", "optimizer", "optimizer_numbers")}
    members = {TRAINING_STATE_MEMBER: np.array(json.dumps(numbers, sort_keys=True))}
    if state.get("epoch_order") is not None:
        members[EPOCH_ORDER_MEMBER] = np.asarray(state["epoch_order"], dtype=np.int64)
    for name, array in state.get("optimizer_arrays", {}).items():
        members[OPTIMIZER_MEMBER_PREFIX + name] = array
    return members


def _read_training_state(arrays):
    """The training_state of MLP.save from the members of a file (shapes already
    checked by _read_members), checked; None when the file holds none. Raises
    ValueError (or TypeError, KeyError) for anything inconsistent."""
    if TRAINING_STATE_MEMBER not in arrays:
        if any(name in arrays for name in OPTIONAL_MEMBERS):
            raise ValueError(f"optimizer or epoch arrays without {TRAINING_STATE_MEMBER}")
        return None
    state = json.loads(str(arrays[TRAINING_STATE_MEMBER]))
    if not isinstance(state, dict) or set(state) != {"schedule_steps", "generator", "optimizer", "optimizer_numbers"}:
        raise ValueError(f"{TRAINING_STATE_MEMBER} is not the expected JSON object")
    if type(state["schedule_steps"]) is not int or state["schedule_steps"] < 1:
        raise ValueError(f"schedule_steps {state['schedule_steps']!r} is not a positive whole number")
    if state["generator"] is not None:
        np.random.PCG64().state = state["generator"]  # raises for a state that is not PCG64's
    if state["optimizer"] is not None and state["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {state['optimizer']!r}")
    numbers = state["optimizer_numbers"]
    if not isinstance(numbers, dict) or not all(type(n) is int and 0 <= n < 2 ** 53 for n in numbers.values()):
        raise ValueError("optimizer_numbers is not a JSON object of whole numbers from 0 to 2**53")
    state["optimizer_arrays"] = {}
    for name in OPTIMIZER_MEMBERS:
        if name in arrays:
            if not np.isfinite(arrays[name]).all():
                raise ValueError(f"{name} holds NaN or infinite values")
            state["optimizer_arrays"][name[len(OPTIMIZER_MEMBER_PREFIX):]] = arrays[name]
    order = arrays.get(EPOCH_ORDER_MEMBER)
    if order is not None and not np.array_equal(np.sort(order), np.arange(len(order))):
        raise ValueError(f"{EPOCH_ORDER_MEMBER} is not a permutation")
    state["epoch_order"] = order
    return state


# ------------------------------------------------------------- reading model files

def _read_members(archive, fail):
    """{name: array} of every member of an open model archive (a zip of NAME.npy files),
    each checked against model_file_members before its data is read; fail(reason) raises.

    layer_sizes is read first (at most MAX_LAYERS + 1 integers), since the
    table of the other members follows from it.
    """
    infos = {}
    for info in archive.infolist():
        name = info.filename.removesuffix(".npy")
        if not info.filename.endswith(".npy"):
            fail(f"unexpected member {info.filename!r}")
        if name in infos:
            fail(f"member {name!r} appears twice")
        infos[name] = info
    if "layer_sizes" not in infos:
        fail("missing 'layer_sizes'")
    try:
        sizes = _read_member(archive, infos["layer_sizes"], "iu", (None,), fail, max_length=MAX_LAYERS + 1)
        if len(sizes) < 2 or sizes.min() < 1:
            fail(f"bad layer_sizes {sizes}")
        n_parameters = sum((int(n_in) + 1) * int(n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:]))
        if n_parameters > MAX_PARAMETERS:
            fail(f"layer_sizes {sizes.tolist()} ask for {n_parameters} parameters, more than {MAX_PARAMETERS}")
        members = model_file_members(sizes.tolist())
        for name in infos:
            if name not in members:
                fail(f"unexpected member {name!r}")
        for name in members:
            if name not in infos and name not in OPTIONAL_MEMBERS:
                fail(f"missing {name!r}")
        _check_optional_members(set(infos), fail)
        for name, info in infos.items():
            if info.file_size > (1 << 20) and info.file_size > MAX_COMPRESSION * info.compress_size:
                fail(f"{name} declares {info.file_size} bytes packed into {info.compress_size}: "
                     f"more than {MAX_COMPRESSION}:1, which no model file of this program is")
        return {name: _read_member(archive, infos[name], *members[name], fail) for name in members if name in infos}
    except ModelFileError:
        raise
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as error:  # bad .npy header, bad CRC, ...
        fail(f"cannot be read ({type(error).__name__}: {error})")


def _check_optional_members(names, fail):
    """The training-state members present make sense together, from their names alone:
    arrays only with the state, and the arrays of one optimizer (velocity, or m and s)."""
    if TRAINING_STATE_MEMBER not in names and names & set(OPTIONAL_MEMBERS):
        fail(f"optimizer or epoch arrays without {TRAINING_STATE_MEMBER}")
    arrays = {name for name in OPTIMIZER_MEMBERS if name in names}
    if arrays not in (set(), {"optimizer.velocity.0"}, {"optimizer.m.0", "optimizer.s.0"}):
        fail(f"optimizer arrays {sorted(arrays)} belong to no single optimizer")


def _read_member(archive, info, kinds, shape, fail, max_length=MAX_LENGTH):
    """One member's array, after checking, before any of its data is decompressed,
    that its declared size and its .npy header fit (kinds, shape) (see model_file_members)."""
    name = info.filename.removesuffix(".npy")
    max_itemsize = 4 * MAX_TEXT_CHARS if kinds == "U" else 8
    max_bytes = NPY_HEADER_LIMIT + math.prod(max_length if n is None else n for n in shape) * max_itemsize
    if info.file_size > max_bytes:
        fail(f"{name} declares {info.file_size} bytes, more than the {max_bytes} it may hold")
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            found_shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f, NPY_HEADER_LIMIT)
        elif version == (2, 0):
            found_shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f, NPY_HEADER_LIMIT)
        else:
            fail(f"{name}: .npy format version {version} is not supported")
        fits = (dtype.kind in kinds and not dtype.hasobject and dtype.itemsize <= max_itemsize
                and len(found_shape) == len(shape)
                and all(n == expected or (expected is None and n <= max_length)
                        for n, expected in zip(found_shape, shape)))
        if not fits:
            expected = tuple("N" if n is None else n for n in shape)
            fail(f"{name} has shape {found_shape} and dtype {dtype}, expected shape {expected} of kind {kinds!r}")
        n_bytes = math.prod(found_shape) * dtype.itemsize
        if info.file_size != f.tell() + n_bytes:
            fail(f"{name}: its size, {info.file_size} bytes, does not match its header")
        raw = f.read(n_bytes)
    if len(raw) != n_bytes:
        fail(f"{name} is cut short")
    return np.frombuffer(raw, dtype).reshape(found_shape, order="F" if fortran_order else "C")

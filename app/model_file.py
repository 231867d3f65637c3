"""The model file: an MLP's weights with everything needed to rebuild it and to resume
its training, in one .npz archive of plain arrays (no pickled object).

    model_file.save(model, path, config=..., steps_done=..., history=..., training_state=...)
    model, info = model_file.load(path, with_info=True)

`model_file_members` is the one table of the format; `load` checks every member against
it before reading its data, so that a file cannot make loading use more memory than the
model needs."""

import io
import json
import math
import zipfile
import zlib

import numpy as np

from app.atomic import atomic_write
from app.ood import PIXEL_DIRECTIONS, SAVED, members_problem
from functions import ACTIVATIONS
from mlp import MLP
from optimizers import OPTIMIZERS

FORMAT_VERSION = 1

# Limits of what a model file may declare, checked before anything is decompressed.
MAX_LAYERS = 64                  # layer_sizes has at most MAX_LAYERS + 1 entries
MAX_PARAMETERS = 1 << 25         # weights and biases in all (128 MiB as float32; --preset best has 1.3 M)
MAX_COMPRESSION = 10             # save stores members uncompressed; a member packed more tightly
                                 # than 1:10 (zeros declared by the gigabyte) is refused unread
MAX_LENGTH = 1 << 24             # a member of variable length (None in the table): entries
MAX_TEXT_CHARS = 1 << 24         # a text member (kind "U"): characters per string (4 bytes each)
NPY_HEADER_LIMIT = 10_000        # bytes of a member's .npy header (NumPy's own default limit)


def model_file_members(layer_sizes):
    """{member name: (dtype kinds, shape)}: everything a model file of these layer
    sizes may hold, the one table of the file format.

    load refuses any other member, and checks each member's declared
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
    # The training state (see to_bytes), members of OPTIONAL_MEMBERS: the optimizer's
    # arrays have the shape of all the parameters in one flat array.
    n_parameters = sum((n_in + 1) * n_out for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:]))
    members[TRAINING_STATE_MEMBER] = ("U", ())
    members[EPOCH_ORDER_MEMBER] = ("iu", (None,))
    for name in OPTIMIZER_MEMBERS:
        members[name] = ("f", (n_parameters,))
    # "Is this a digit at all?" (app/ood.py), optional: statistics of the training images'
    # pixels, n_inputs, along PIXEL_DIRECTIONS directions for each of the n_classes digits
    n_inputs, n_classes, k = layer_sizes[0], layer_sizes[-1], PIXEL_DIRECTIONS
    members.update({"ood.pixel_means": ("f", (n_classes, n_inputs)),
                    "ood.pixel_directions": ("f", (n_classes, k, n_inputs)),
                    "ood.pixel_variances": ("f", (n_classes, k)),
                    "ood.pixel_noise": ("f", (n_classes,)),
                    "ood.pixel_threshold": ("f", ()),
                    "ood.shape_limits": ("f", (3,))})
    # ... and those of an older version of the project, read as no statistics (OLDER_OOD_MEMBERS)
    n_features = layer_sizes[1] if n_layers > 1 else n_inputs
    members.update({"ood.class_means": ("f", (n_classes, n_features)),
                    "ood.precision": ("f", (n_features, n_features)),
                    "ood.threshold": ("f", ())})
    return members


TRAINING_STATE_MEMBER = "training_state_json"
EPOCH_ORDER_MEMBER = "epoch_order"  # only when a run stopped inside an epoch
OPTIMIZER_MEMBER_PREFIX = "optimizer."
OPTIMIZER_MEMBERS = ("optimizer.velocity.0", "optimizer.m.0", "optimizer.s.0")  # momentum; Adam
# Members a model file may leave out: files written before the training state was
# saved, by save without one, or with an optimizer that keeps no arrays.
OPTIONAL_MEMBERS = (TRAINING_STATE_MEMBER, EPOCH_ORDER_MEMBER, *OPTIMIZER_MEMBERS)
OOD_MEMBERS = tuple(SAVED.values())  # app/ood.py's: all or none
# The statistics of an older version of the project (of the first hidden layer): such a
# file loads as one without statistics (predict and the page say they cannot tell; a new run
# saves them).
OLDER_OOD_MEMBERS = ("ood.class_means", "ood.precision", "ood.threshold", "ood.shape_limits")


class ModelFileError(ValueError):
    """A model file that is not a readable, consistent file of our format."""


def to_bytes(model, config=None, steps_done=0, history=None, training_state=None, ood_members=None):
    """The model file of `model` (an MLP), as the bytes of an .npz archive.

    The file holds, with no pickled object: format_version, layer_sizes,
    activations, steps_done, the training configuration as JSON text,
    layer{i}.weights (n_in, n_out) / layer{i}.bias (n_out,) for each layer,
    and the training history (so that a resumed run continues its curves):
    history_losses, the loss of each step, and history_json, the step of the
    first of them and the evaluations made.
    history: {"loss_steps": [consecutive steps], "losses": [...], "evaluations": [...]}.
    training_state (optional, from nn.py's train): {"schedule_steps": the steps the
    learning-rate schedule was built for, "generator": the generator's
    bit_generator.state or None, "optimizer": its name or None, "optimizer_numbers":
    {...}, "optimizer_arrays": {name: array (P,)}, "epoch_order": the permutation
    (N,) of the epoch in progress or None}; written as training_state_json, and
    epoch_order and optimizer.NAME arrays when there are some.
    ood_members (optional): app/ood.py's statistics, {name in OOD_MEMBERS: array}.
    """
    history = history or {"loss_steps": [], "losses": [], "evaluations": []}
    first_step = history["loss_steps"][0] if history["loss_steps"] else steps_done + 1
    arrays = {
        "format_version": np.array(FORMAT_VERSION),
        "layer_sizes": np.array(model.layer_sizes, dtype=np.int64),
        "activations": np.array(model.activations),
        "steps_done": np.array(steps_done, dtype=np.int64),
        "config_json": np.array(json.dumps(config or {}, sort_keys=True)),
        "history_losses": np.asarray(history["losses"], dtype=np.float32),
        "history_json": np.array(json.dumps({"first_loss_step": first_step,
                                             "evaluations": history["evaluations"]})),
    }
    for index, layer in enumerate(model.layers):
        arrays[f"layer{index}.weights"] = layer.W
        arrays[f"layer{index}.bias"] = layer.b
    if training_state is not None:
        arrays.update(_training_state_members(training_state))
    arrays.update(ood_members or {})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def save(model, path, config=None, steps_done=0, history=None, training_state=None, ood_members=None):
    """Write the model file of `model` to `path` (see to_bytes), atomically."""
    data = to_bytes(model, config, steps_done, history, training_state, ood_members)
    with atomic_write(path) as f:
        f.write(data)



def load(path, with_info=False):
    """Rebuild a saved model. Raises ModelFileError for anything but a consistent
    file of our format; never unpickles, and decompresses nothing that
    model_file_members does not allow (see _read_members).

    Returns the MLP, or (MLP, info) with with_info=True, where info is
    {"config": dict, "steps_done": int, "history": dict as given to save,
    "training_state": dict as given to save, or None when the file has none,
    "ood": {name: array} of the OOD_MEMBERS, {} when the file has none}.
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
    model = MLP(sizes.tolist(), activations, rng=np.random.default_rng(0))
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
    ood_members = {name: arrays[name] for name in OOD_MEMBERS if name in arrays}
    if set(ood_members) != set(OOD_MEMBERS):  # none, or an older file's (_read_arrays checked which)
        ood_members = {}
    problem = members_problem(ood_members) if ood_members else None
    if problem:
        fail(f"its digit statistics: {problem}")
    info = {"config": config, "steps_done": steps_done, "history": history, "training_state": training_state,
            "ood": ood_members}
    return (model, info) if with_info else model


def _training_state_members(state):
    """The model-file members for a training_state (see to_bytes): plain JSON and arrays."""
    numbers = {key: state[key] for key in ("schedule_steps", "generator", "optimizer", "optimizer_numbers")}
    members = {TRAINING_STATE_MEMBER: np.array(json.dumps(numbers, sort_keys=True))}
    if state.get("epoch_order") is not None:
        members[EPOCH_ORDER_MEMBER] = np.asarray(state["epoch_order"], dtype=np.int64)
    for name, array in state.get("optimizer_arrays", {}).items():
        members[OPTIMIZER_MEMBER_PREFIX + name] = array
    return members


def _read_training_state(arrays):
    """The training_state of save from the members of a file (shapes already
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
            if name not in infos and name not in OPTIONAL_MEMBERS + OOD_MEMBERS + OLDER_OOD_MEMBERS:
                fail(f"missing {name!r}")
        _check_optional_members(set(infos), fail)
        present = set(infos) & {*OOD_MEMBERS, *OLDER_OOD_MEMBERS}  # app/ood.py's: all, none or an older file's
        if present and present != set(OOD_MEMBERS) and present != set(OLDER_OOD_MEMBERS):
            current, older = set(OOD_MEMBERS) - set(OLDER_OOD_MEMBERS), set(OLDER_OOD_MEMBERS) - set(OOD_MEMBERS)
            if present & current and present & older:
                fail("both the current digit statistics (ood.pixel_*) and an older version's (ood.class_means, ...)")
            fail(f"only some of {', '.join(OOD_MEMBERS)}")
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


def new_model(config, rng):
    """The untrained MLP of a configuration: 784 inputs, config["hidden"] with
    config["activation"], 10 outputs; initialised from rng (the page's Train too)."""
    return MLP([784, *config["hidden"], 10], [config["activation"]] * len(config["hidden"]) + ["softmax"],
               rng=rng, dropout=config["dropout"])

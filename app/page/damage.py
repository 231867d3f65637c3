"""What breaks the network: damage a copy of a model and measure its test accuracy.

The drawing page's "break it" controls (serve.py, POST /api/damage) send a dict
of damage settings; ``check_settings`` refuses any bad one with a one-line
reason, ``damaged_copy`` applies them to a copy of the model (never to the model
itself, never to its file), and ``accuracy`` reads the 10,000 test images with it.

The settings, all optional (leaving one out means "off"):
    zero_biases  true or false: set every bias to 0
    noise        0 to 1: add Gaussian noise to every weight matrix, its standard
                 deviation this fraction of the matrix's own (1: noise as large as
                 the weights)
    prune        0 to 1: set this fraction of all the weights, the smallest in
                 magnitude, to 0 (biases are kept)
    units_off    0 to 1: switch off this fraction of each hidden layer's units,
                 chosen at random: their outgoing weights are set to 0, so the next
                 layer no longer hears them, whatever the activation
    zero_layer   null, or a layer number from 1 (the first hidden layer) to the
                 output layer: set that layer's weights and biases to 0
    seed         a whole number from 0 to 2**32 - 1 (default 0): the noise and the
                 units switched off, so that the same settings damage the same way
They are applied in that order: noise, prune, units_off, zero_biases, zero_layer.
"""

import time

import numpy as np

FRACTIONS = ("noise", "prune", "units_off")
SETTINGS = ("zero_biases", *FRACTIONS, "zero_layer", "seed")
MAX_SEED = 2 ** 32 - 1


class BadSetting(ValueError):
    """A damage setting that cannot be applied; the message is one line naming it."""


def check_settings(settings, n_layers):
    """The settings with every one present (off when left out), checked; raises BadSetting.

    settings: a dict parsed from JSON; n_layers: the model's number of layers
    (weight matrices), the largest zero_layer."""
    if not isinstance(settings, dict):
        raise BadSetting("damage: expected a JSON object of settings such as {\"zero_biases\": true}")
    for name in settings:
        if name not in SETTINGS:
            raise BadSetting(f"damage: unknown setting {name!r} (known: {', '.join(SETTINGS)})")
    checked = {"zero_biases": False, "noise": 0.0, "prune": 0.0, "units_off": 0.0, "zero_layer": None, "seed": 0}
    checked.update(settings)
    if type(checked["zero_biases"]) is not bool:
        raise BadSetting(f"zero_biases: expected true or false, got {json_text(checked['zero_biases'])}")
    for name in FRACTIONS:
        value = checked[name]
        if type(value) not in (int, float) or not 0 <= value <= 1:  # NaN fails the range too
            raise BadSetting(f"{name}: expected a number from 0 to 1, got {json_text(value)}")
        checked[name] = float(value)
    layer = checked["zero_layer"]
    if layer is not None and (type(layer) is not int or not 1 <= layer <= n_layers):
        raise BadSetting(f"zero_layer: expected null or a layer number from 1 to {n_layers}, got {json_text(layer)}")
    seed = checked["seed"]
    if type(seed) is not int or not 0 <= seed <= MAX_SEED:
        raise BadSetting(f"seed: expected a whole number from 0 to {MAX_SEED}, got {json_text(seed)}")
    return checked


def json_text(value):
    """A value as the page sent it, shortened for a one-line message."""
    import json
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def is_undamaged(settings):
    """True when checked settings change nothing."""
    return (not settings["zero_biases"] and settings["zero_layer"] is None
            and not any(settings[name] for name in FRACTIONS))


def damaged_copy(model, settings):
    """A copy of `model` (see MLP.copy) with checked settings applied; `model` is unchanged."""
    damaged = model.copy()
    rng = np.random.default_rng(settings["seed"])
    layers = damaged.layers
    if settings["noise"]:
        for layer in layers:
            scale = settings["noise"] * float(layer.W.std())
            layer.W += rng.standard_normal(layer.W.shape).astype(layer.W.dtype) * layer.W.dtype.type(scale)
    if settings["prune"]:
        magnitudes = np.concatenate([np.abs(layer.W).ravel() for layer in layers])
        count = int(round(settings["prune"] * magnitudes.size))
        if count:
            smallest = np.argpartition(magnitudes, count - 1)[:count]
            keep = np.ones(magnitudes.size, bool)
            keep[smallest] = False  # exactly `count` weights go, ties or not
            offset = 0
            for layer in layers:
                layer.W *= keep[offset:offset + layer.W.size].reshape(layer.W.shape)
                offset += layer.W.size
    if settings["units_off"]:
        for layer, next_layer in zip(layers[:-1], layers[1:]):
            count = int(round(settings["units_off"] * layer.n_out))
            next_layer.W[rng.permutation(layer.n_out)[:count]] = 0
    if settings["zero_biases"]:
        for layer in layers:
            layer.b[...] = 0
    if settings["zero_layer"] is not None:
        layers[settings["zero_layer"] - 1].Wb[...] = 0
    return damaged


def accuracy(model, inputs, labels):
    """(fraction of the inputs (N, n_inputs) float whose predicted class is the label (N,),
    seconds it took)."""
    started = time.perf_counter()
    right = int(np.count_nonzero(model.predict(inputs) == labels))
    return right / len(labels), time.perf_counter() - started

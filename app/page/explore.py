"""The server's side of the page's explore views: why (saliency) and break it.

An Explorer holds what those views share: the served model (serve.ServedModel,
whose ``model`` is what the drawing is read with), the model as loaded (the
original, which damage never touches), the damage settings in force and the
10,000 test images, loaded from --data on first use. Its methods take the JSON
value a request sent, check it (BadValue: one line, answered with 400), and
return the JSON value to answer. A training run (training_session.py) hands
the Explorer its newest weights (use_model) and, once saved, its model (adopt).
"""

import contextlib
import math
import threading
import time

import numpy as np

from app.page import damage
from app import data
from app import predict
from app.page.explain import saliency

IMAGE_SIDE = 28


class BadValue(ValueError):
    """A value in a request that the explore views refuse; the message is one line."""


class Unavailable(RuntimeError):
    """What the server cannot do now (no test images, say); the message is one line."""


class Busy(RuntimeError):
    """A request that conflicts with a training run (answered 409); the message is one line."""


class Explorer:
    """The state behind /api/explain and /api/damage (see serve.py)."""

    def __init__(self, served, data_dir):
        self.served = served
        self.original = served.model
        self.data_dir = data_dir
        self.settings = damage.check_settings({}, len(self.original.layers))
        self.damage_number = 0  # how many times the damage changed: every reading carries it (a class shares it)
        self.measured = None  # (model, its test accuracy, seconds): the weights in use, measured once
        self.lock = threading.Lock()  # one saliency or damage change at a time: they share buffers and state
        self.original_accuracy = None  # of the original model on the test images, once measured
        self._test_set = None
        self.training = None  # the server's training_session.TrainingSession, if any

    # ------------------------------------------------------------ why

    def explain(self, value):
        """{"input": 28x28 grey levels in [0, 1], "digit": 0-9} -> {"digit", "probability",
        "saliency": (28, 28) divided by its largest magnitude, "largest": that magnitude,
        "saturated": whether the gradient is 0 everywhere, p(digit) 1 in the model's dtype}.

        The saliency is d log p(digit) / d pixel for the model the drawing is read
        with (damaged or not): positive where more ink makes the digit more likely.
        Unavailable (503) when the model's sums overflow for this input (NaN is not JSON).
        """
        if not isinstance(value, dict) or set(value) != {"input", "digit"}:
            raise BadValue('body: expected {"input": 28x28 grey levels in [0, 1], "digit": 0-9}')
        digit = value["digit"]
        if type(digit) is not int or not 0 <= digit <= 9:
            raise BadValue(f"digit: expected a whole number from 0 to 9, got {damage.json_text(digit)}")
        pixels = grey_image(value["input"])
        with self.lock, np.errstate(over="ignore", invalid="ignore"):  # the Unavailable below says it
            gradient, log_probability = saliency(self.served.model, pixels.ravel(), digit)
        if not (np.isfinite(gradient).all() and math.isfinite(log_probability)):  # NaN: not JSON
            raise Unavailable(f"the model in use: {predict.OUTPUTS_OVERFLOW}")
        largest = float(np.abs(gradient).max())
        scaled = gradient / largest if largest > 0 else gradient
        # The map is right to a few float32 steps however sure the reading (explain.py sums the
        # other probabilities for 1 - p): on 400 test digits, against the same weights in float64,
        # within 1e-5 of its largest value, the 92 whose p rounds to 1 in float32 included. Only
        # when every other probability underflows to 0 (a logit lead over about 100; the test
        # digits lead by 39 at most) is the gradient 0 everywhere: the page then says why.
        saturated = largest == 0.0 and log_probability == 0.0
        return {"digit": digit, "probability": math.exp(log_probability), "largest": largest, "saturated": saturated,
                "saliency": np.round(scaled.astype(np.float64), 4).reshape(IMAGE_SIDE, IMAGE_SIDE).tolist()}

    # ------------------------------------------------------------ break it

    def damage_state(self):
        """GET /api/damage: the settings in force and the test accuracy of the original and the damaged model."""
        self.test_set()  # loaded (the first time, for seconds) before the lock: readings go on meanwhile
        with self.lock:
            return self._damage_answer(0.0)

    def set_damage(self, value):
        """POST /api/damage: apply new settings (see damage.py) to a fresh copy of the
        original model, read the drawing with it from now on, and measure it."""
        try:
            settings = damage.check_settings(value, len(self.original.layers))
        except damage.BadSetting as error:
            raise BadValue(str(error)) from None
        self.test_set()  # before changing anything: no test images, no damage
        training_lock = self.training.lock if self.training is not None else contextlib.nullcontext()
        with training_lock:  # no run starts between the check and the change
            if self.training is not None and self.training.status in ("loading", "running", "stopped"):
                raise Busy("break it waits while a training run goes (or waits for save or discard)")
            with self.lock:
                started = time.perf_counter()
                if damage.is_undamaged(settings):
                    self.served.model = self.original
                else:
                    self.served.model = damage.damaged_copy(self.original, settings)
                self.settings = settings
                self.damage_number += 1
                return self._damage_answer(time.perf_counter() - started)

    def _damage_answer(self, damage_seconds):
        """The answer of /api/damage: settings, damaged (whether they change anything),
        training_weights (the drawing is read with a training run's weights, not the
        model file's) and weights_step (the step those weights come from, else None), both
        test accuracies, the seconds that damaging the copy and reading the test
        images with it took, and damage_number (see __init__)."""
        inputs, labels = self.test_set()
        if self.original_accuracy is None:
            self.original_accuracy, _ = damage.accuracy(self.original, inputs, labels)
        if self.measured is None or self.measured[0] is not self.served.model:  # new weights: measure them
            self.measured = (self.served.model, *damage.accuracy(self.served.model, inputs, labels))
        _, accuracy, seconds = self.measured
        damaged = not damage.is_undamaged(self.settings)
        training_weights = not damaged and self.served.model is not self.original
        return {"settings": self.settings, "damaged": damaged, "training_weights": training_weights,
                "weights_step": self.training.snapshot_step if training_weights and self.training else None,
                "test_accuracy": accuracy, "original_test_accuracy": self.original_accuracy,
                "test_images": int(len(labels)), "seconds": round(damage_seconds + seconds, 4),
                "damage_number": self.damage_number}

    def use_model(self, model):
        """Read the drawing with `model` from now on (a training run's newest weights, or the
        original again), undamaged."""
        with self.lock:
            self.undo_damage(len(model.layers))
            self.served.model = model

    def adopt(self, served):
        """A new model file becomes the original (one a training run saved, or one
        replaced on disk): served is the serve.ServedModel of the new file, with its facts."""
        with self.lock:
            self.original = served.model
            self.original_accuracy = None
            self.undo_damage(len(served.model.layers))
            self.served.take(served)

    def undo_damage(self, n_layers):
        """No damage from now on (under self.lock); a new damage_number if there was some, so
        that every page shows it is undone."""
        if not damage.is_undamaged(self.settings):
            self.damage_number += 1
        self.settings = damage.check_settings({}, n_layers)

    def test_set(self):
        """(inputs (10000, 784) float32, labels (10000,)): the test images, loaded once."""
        if self._test_set is None:
            try:
                images, labels, _ = data.load_csv(data.csv_path(self.data_dir, "test"))
            except (data.DataError, OSError) as error:
                raise Unavailable(f"no test images to measure with: {error} (start the server with --data DIR)") \
                    from None
            self._test_set = (data.to_inputs(images), labels)
        return self._test_set


def grey_image(value):
    """(28, 28) float64 grey levels from a JSON value: 28 rows of 28 numbers, or 784 numbers."""
    rows = value if isinstance(value, list) else None
    if rows is not None and len(rows) == IMAGE_SIDE and all(isinstance(row, list) for row in rows):
        flat = [pixel for row in rows if len(row) == IMAGE_SIDE for pixel in row]
    else:
        flat = rows
    if not isinstance(flat, list) or len(flat) != IMAGE_SIDE * IMAGE_SIDE:
        raise BadValue("input: expected 28 rows of 28 grey levels (or 784 of them)")
    return grey_levels(flat, "input", (IMAGE_SIDE, IMAGE_SIDE))


def grey_levels(values, name, shape):
    """A float64 array of `shape` from a JSON list of numbers, each a grey level in [0, 1];
    raises BadValue naming the field `name` (serve.py's drawings are checked here too)."""
    if not set(map(type, values)) <= {int, float}:  # bool, str, list, null are refused
        raise BadValue(f"{name}: every grey level must be a number")
    try:
        grey = np.array(values, dtype=np.float64).reshape(shape)
    except OverflowError:  # a whole number too large for a float
        grey = None
    if grey is None or not np.isfinite(grey).all() or grey.min() < 0 or grey.max() > 1:
        raise BadValue(f"{name}: every grey level must be in [0, 1]")
    return grey

"""Beyond the original: every optimizer, activation, regulariser and augmentation learns on real data."""

import signal

import numpy as np
import pytest

import augment
from app import data
import nn
import optimizers
from conftest import PROJECT_DIR, assert_close_gradients, numerical_gradient
from functions import cross_entropy
from mlp import MLP
from app.progress import Progress


class NoStop:
    signal = None


@pytest.fixture(scope="module")
def subset():
    images, labels, _ = data.load_csv(PROJECT_DIR / "datasets" / "mnist_train.csv")
    test_images, test_labels, _ = data.load_csv(PROJECT_DIR / "datasets" / "mnist_test.csv")
    return (images[:6000], labels[:6000]), (test_images[:2000], test_labels[:2000])


def train_small(subset, steps=400, **changes):
    config = dict(nn.DEFAULTS, steps=steps, eval_every=0, hidden=[64], **changes)
    rng = np.random.default_rng(0)
    model = MLP([784, *config["hidden"], 10], [config["activation"]] * len(config["hidden"]) + ["softmax"],
                rng=rng, dropout=config["dropout"])
    train_set, test_set = subset
    history = nn.train(model, config, train_set, {"test": test_set}, rng,
                       Progress(steps, len(train_set[1]) // config["batch_size"], quiet=True), NoStop())
    loss, accuracy, _ = nn.evaluate(model, *test_set)
    return accuracy, history, model


@pytest.mark.parametrize("changes", [
    {},
    {"optimizer": "momentum", "lr": 0.02},
    {"optimizer": "nesterov", "lr": 0.02},
    {"optimizer": "adam", "lr": 0.002},
    {"lr_schedule": "cosine", "warmup_steps": 50},
    {"lr_schedule": "step"},
    {"weight_decay": 1e-4},
    {"dropout": 0.2},
    {"augment": 2},
    {"rotate": 10},
    {"activation": "leaky_relu"},
    {"activation": "tanh"},
    {"activation": "sigmoid", "lr": 0.5},
    {"activation": "gelu"},
], ids=lambda changes: "-".join(f"{k}={v}" for k, v in changes.items()) or "sgd")
def test_each_component_learns_on_a_real_subset(subset, changes):
    accuracy, history, model = train_small(subset, **changes)
    # Bars from a sweep over seeds 0-9 (test accuracy after 400 steps): every case averaged
    # 0.867-0.899 with a standard deviation of 0.002-0.006, so 0.85 is at least 5 of them
    # below each mean; random shifts learn slower and vary more (mean 0.853, sd 0.012), so
    # their bar, 0.79, is 5 sd below theirs too. A broken component lands far lower.
    assert accuracy >= (0.79 if changes.get("augment") else 0.85), accuracy
    assert np.mean(history["losses"][-50:]) < np.mean(history["losses"][:50]) / 2
    assert model.all_finite()


def test_random_shifts_move_images_by_at_most_the_limit():
    rng = np.random.default_rng(0)
    images = np.zeros((200, 784), np.uint8)
    images[:, 14 * 28 + 14] = 255  # one bright pixel in the middle
    shifted = augment.random_shifts(images, 2, rng)
    rows, columns = np.divmod(shifted.argmax(axis=1), 28)
    assert (shifted.sum(axis=1) == 255).all()  # the pixel never falls off
    assert set(rows - 14) == {-2, -1, 0, 1, 2} and set(columns - 14) == {-2, -1, 0, 1, 2}


def test_early_stopping_restores_the_best_weights(subset):
    train_set, test_set = subset
    config = dict(nn.DEFAULTS, steps=3000, eval_every=50, hidden=[32], lr=0.5, early_stopping=2)
    rng = np.random.default_rng(1)
    model = MLP([784, 32, 10], rng=rng)
    val_set = (train_set[0][:500], train_set[1][:500])
    history = nn.train(model, config, (train_set[0][500:], train_set[1][500:]),
                       {"val": val_set}, rng, Progress(3000, 86, quiet=True), NoStop())
    assert history["ended"] == "early_stopping" and history["steps_done"] < 3000
    best = min(history["evaluations"], key=lambda e: e["val_loss"])
    assert history["best_step"] == best["step"]
    # The same float32 weights through the same evaluation: equal on one machine; 8 float32
    # ulps of slack only for a BLAS that would split the work differently from call to call.
    assert nn.evaluate(model, *val_set)[0] == pytest.approx(best["val_loss"], rel=8 * 1.2e-7)  # see above


def test_best_preset_is_documented_flags():
    parser = nn.build_parser()
    args = parser.parse_args(["--preset", "best", "--lr", "0.01"])
    config = nn.resolve_config(args)
    assert config["hidden"] == nn.PRESETS["best"]["hidden"] and config["lr"] == 0.01  # a flag given wins
    help_text = " ".join(parser.format_help().split())  # argparse wraps lines where it likes
    for key, value in nn.PRESETS["best"].items():
        flag = f"--{key.replace('_', '-')} {' '.join(map(str, value)) if isinstance(value, list) else value}"
        assert flag in help_text, flag
        assert parser.parse_args(flag.split())  # and it is a real flag with a value it takes


def test_rotations_turn_about_the_centre_and_keep_the_image():
    rng = np.random.default_rng(0)
    images, _, _ = data.load_csv(PROJECT_DIR / "datasets" / "mnist_test.csv")
    batch = images[:64]
    np.testing.assert_array_equal(augment.random_rotations(batch, 0, rng), batch)  # 0 degrees: unchanged
    turned = augment.random_rotations(batch, 15, rng).astype(float)
    assert abs(turned.sum() / batch.astype(float).sum() - 1) < 0.03  # ink is kept
    assert (turned != batch).mean() > 0.05
    # a bar through the centre, turned by exactly 90 degrees, becomes the perpendicular bar
    bar = np.zeros((1, 28, 28), np.uint8)
    bar[0, 13:15, 4:24] = 255

    class Quarter:
        def integers(self, low, high, size):
            return np.full(size, high - 1)  # the last angle of the grid: +90 degrees
    turned = augment.random_rotations(bar.reshape(1, 784), 90, Quarter()).reshape(28, 28)
    np.testing.assert_array_equal(turned, bar[0].T)


@pytest.mark.parametrize("optimizer", optimizers.OPTIMIZERS)
def test_after_a_training_step_dW_is_the_gradient_of_the_mean_loss(subset, optimizer):
    """One step of nn.train on the default path (and each other optimizer), with the
    network in float64: every layer's dW and db must then equal the finite-difference
    gradient of the mean batch loss at the weights before the step, whatever the
    optimizer did with them, and the update must be the textbook one for SGD."""
    (images, labels), _ = subset
    batch = (images[:64], labels[:64])  # batch 64 of 64 images: one step sees them all
    config = dict(nn.DEFAULTS, steps=1, eval_every=0, optimizer=optimizer)
    rng = np.random.default_rng(0)
    model = MLP([784, 150, 150, 10], rng=rng, dtype=np.float64)
    before = model.flat_parameters.copy()
    nn.train(model, config, batch, {}, rng, Progress(1, 1, quiet=True), NoStop())
    after = model.flat_parameters.copy()

    model.flat_parameters[...] = before
    X = data.to_inputs(batch[0])
    sample = np.random.default_rng(1)
    for layer in model.layers:
        for gradient, parameter in ((layer.dW, layer.W), (layer.db, layer.b)):
            flat_gradient, flat_parameter = gradient.reshape(-1), parameter.reshape(-1)
            for i in sample.choice(flat_parameter.size, size=min(40, flat_parameter.size), replace=False):
                numeric = numerical_gradient(lambda: cross_entropy(model.forward(X), batch[1]),
                                             flat_parameter[i:i + 1])
                assert_close_gradients(flat_gradient[i:i + 1], numeric)
    if optimizer == "sgd":  # p <- p - 0.1 g, exactly as written, in float64
        np.testing.assert_array_equal(after, before - model.flat_parameters.dtype.type(0.1) * model.flat_gradients)


class StopAtStep(Progress):
    """A quiet progress display that also stands for the stop request: as if Ctrl-C
    came during step `stop_step`, seen by nn.train right after it."""

    def __init__(self, stop_step, total_steps, steps_per_epoch):
        super().__init__(total_steps, steps_per_epoch, quiet=True)
        self.stop_step, self.signal = stop_step, None

    def step(self, step, loss):
        super().step(step, loss)
        if step == self.stop_step:
            self.signal = signal.SIGINT


@pytest.mark.parametrize("changes", [
    {},
    {"optimizer": "nesterov", "lr": 0.02, "lr_schedule": "cosine", "warmup_steps": 30, "dropout": 0.2, "augment": 1},
    {"optimizer": "adam", "lr": 0.002, "weight_decay": 1e-4},
], ids=["sgd", "nesterov-cosine-warmup-dropout-augment", "adam"])
def test_a_stopped_and_resumed_run_is_the_straight_run(subset, tmp_path, changes):
    """Stopped at step 50 of 150, saved, loaded and resumed as nn.run does it: the weights
    and every loss are exactly those of the run that was never stopped (same generator
    state, epoch order, optimizer state and schedule position)."""
    steps, stop_step = 150, 50  # 6,000 images: 93 steps an epoch, so the stop falls inside an epoch
    _, straight_history, straight = train_small(subset, steps=steps, **changes)
    train_set, test_set = subset
    config = dict(nn.DEFAULTS, steps=steps, eval_every=0, hidden=[64], **changes)
    rng = np.random.default_rng(0)
    model = MLP([784, 64, 10], rng=rng, dropout=config["dropout"])
    stopper = StopAtStep(stop_step, steps, 93)
    history = nn.train(model, config, train_set, {"test": test_set}, rng, stopper, stopper)
    assert history["ended"] == "interrupted" and history["steps_done"] == stop_step
    model.save(tmp_path / "model.npz", config=config, steps_done=stop_step, history=history,
               training_state=history["training_state"])

    resumed, info = MLP.load(tmp_path / "model.npz", with_info=True)
    rng = np.random.default_rng([0, stop_step])  # as nn.run makes it; the saved state replaces it
    for layer in resumed.layers[:-1]:
        layer.dropout, layer.rng = config["dropout"], rng
    history = nn.train(resumed, config, train_set, {"test": test_set}, rng, Progress(steps, 93, quiet=True),
                       NoStop(), info["steps_done"], info["history"], info["training_state"])
    assert history["losses"][stop_step:] == straight_history["losses"][stop_step:]  # (the first are saved as float32)
    assert np.array_equal(resumed.flat_parameters, straight.flat_parameters)


def test_a_resume_past_the_schedule_keeps_its_last_rate():
    config = dict(nn.DEFAULTS, steps=2000, lr=0.05, lr_schedule="cosine", warmup_steps=500)
    rates = nn.learning_rates_of_run(config, 1000)
    assert rates[:1000] == nn.learning_rates_of_run(dict(config, steps=1000), 1000)  # the first run's schedule
    assert rates[1000:] == [rates[999]] * 1000 and rates[999] < 1e-6  # then its last rate, not a restart
    assert "steps 1,001-2,000 keep its last rate, 4.93e-07" in nn.schedule_note(config, 1000)
    assert nn.schedule_note(dict(config, lr_schedule="constant", warmup_steps=0), 1000) is None


@pytest.mark.parametrize("stop_step", [None, 1050], ids=["steps-reached", "interrupted"])
def test_early_stopping_keeps_the_best_weights_however_the_run_ends(subset, tmp_path, stop_step):
    """Patience never runs out here; the run ends at --steps, or by Ctrl-C between two
    evaluations. The model keeps the weights of the best validation loss, says their
    step, and carries no generator or optimizer state of a later step."""
    train_set, _ = subset
    config = dict(nn.DEFAULTS, steps=1200, eval_every=100, hidden=[32], lr=0.5, early_stopping=1000)
    rng = np.random.default_rng(1)
    model = MLP([784, 32, 10], rng=rng)
    val_set = (train_set[0][:500], train_set[1][:500])
    small_train_set = (train_set[0][500:1000], train_set[1][500:1000])  # 500 images: it overfits early
    stopper = StopAtStep(stop_step, 1200, 7) if stop_step else NoStop()
    history = nn.train(model, config, small_train_set, {"val": val_set}, rng,
                       stopper if stop_step else Progress(1200, 7, quiet=True), stopper)
    assert history["ended"] == ("interrupted" if stop_step else "completed")
    assert history["last_step"] == (stop_step or 1200)
    best = min(history["evaluations"], key=lambda e: e["val_loss"])
    assert best["step"] < history["evaluations"][-1]["step"]  # the last weights are not the best ones
    assert history["steps_done"] == history["best_step"] == best["step"]
    assert nn.evaluate(model, *val_set)[0] == best["val_loss"]  # the very weights that were evaluated
    assert history["training_state"]["generator"] is None and history["training_state"]["optimizer"] is None


def test_fast_preset_is_flags_on_the_default_network():
    """--preset fast is training flags only: the default network and loop, far fewer images
    seen, no evaluations during training."""
    parser = nn.build_parser()
    config = nn.resolve_config(parser.parse_args(["--preset", "fast"]))
    assert config["hidden"] == nn.DEFAULTS["hidden"] and config["activation"] == nn.DEFAULTS["activation"]
    assert config["dropout"] == 0 and config["augment"] == 0 and config["rotate"] == 0
    images_seen = config["steps"] * config["batch_size"]  # its time is measured by benchmarks/benchmark.py
    assert images_seen < nn.DEFAULTS["steps"] * nn.DEFAULTS["batch_size"] / 5
    assert config["eval_every"] == 0  # tested once, after training: evaluations cost training time
    assert nn.resolve_config(parser.parse_args(["--preset", "fast", "--eval-every", "100"]))["eval_every"] == 100
    assert nn.resolve_config(parser.parse_args([])) == dict(nn.DEFAULTS)  # the defaults stay the original run
    assert "fast: --optimizer nesterov --lr 0.2" in " ".join(parser.format_help().split())

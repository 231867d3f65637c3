"""nn.py end to end on the real MNIST, and every way a run can go wrong."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import PROJECT_DIR, run_nn
from app import cli, data, errors, model_file, monitor, report, save, signals, startup
from mlp import MLP

OUTPUTS = ("model_mnist.npz", "stats.json", "training_loss_graph.png")


def read_stats(folder):
    return json.loads((folder / "stats.json").read_text())


def test_full_default_configuration_beats_the_original(tmp_path):
    """The claim of the project: the original configuration, unchanged, reaches at
    least the original's 97.91 % test accuracy and 0.0784 test loss."""
    result = run_nn("--out", tmp_path, "--quiet")
    assert result.returncode == 0, result.stderr
    stats = read_stats(tmp_path)
    assert stats["steps"] == 20000 and stats["config"]["lr"] == 0.1 and stats["config"]["batch_size"] == 64
    assert stats["config"]["hidden"] == [150, 150] and stats["config"]["optimizer"] == "sgd"
    assert stats["test_accuracy"] >= 0.9791, stats["test_accuracy"]
    assert stats["test_loss"] <= 0.0784, stats["test_loss"]
    for name in OUTPUTS:
        assert (tmp_path / name).stat().st_size > 1000


def test_short_run_learns_and_writes_every_output(tmp_path):
    result = run_nn("--steps", 300, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    stats = read_stats(tmp_path)
    assert stats["test_accuracy"] >= 0.90
    assert stats["steps"] == 300 and stats["seed"] == 0 and not stats["interrupted"]
    assert stats["loss_curve"]["loss"][0] > stats["loss_curve"]["loss"][-1]
    assert len(stats["confusion_matrix"]) == 10 and sum(map(sum, stats["confusion_matrix"])) == 10000
    for key in ("train_time_s", "data_load_time_s", "per_class_accuracy", "evaluations", "config"):
        assert key in stats
    assert all(value == round(value, 6) for e in stats["evaluations"] for value in e.values())  # not 17 digits
    for name in OUTPUTS + ("accuracy_graph.png", "confusion_matrix.png", "misclassified.png", "weights.png"):
        assert (tmp_path / name).read_bytes()[:4] == (b"PK\x03\x04" if name.endswith("npz") else
                                                        b"{\n  " if name.endswith("json") else b"\x89PNG")
    model = model_file.load(tmp_path / "model_mnist.npz")
    assert model.layer_sizes == [784, 150, 150, 10]
    assert "Test accuracy" in result.stdout and "\r" not in result.stdout


def test_same_seed_same_model(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    for folder in (first, second):
        assert run_nn("--steps", 50, "--eval-every", 0, "--out", folder, "--quiet").returncode == 0
    a, b = model_file.load(first / "model_mnist.npz"), model_file.load(second / "model_mnist.npz")
    assert np.array_equal(a.flat_parameters, b.flat_parameters)


@pytest.mark.parametrize("flags, message", [
    (["--steps", "0"], "--steps must be a positive"),
    (["--steps", "-5"], "--steps must be a positive"),
    (["--batch-size", "0"], "--batch-size must be positive"),
    (["--lr", "-0.1"], "--lr must be a positive"),
    (["--lr", "nan"], "--lr must be a positive"),
    (["--hidden"], "--hidden needs at least one"),
    (["--hidden", "150", "0"], "--hidden sizes must be positive"),
    (["--batch-size", "100000"], "larger than the 60,000 training images"),
    (["--val-split", "0.99999"], "--val-split 0.99999 leaves too few training images for one batch of 64: "
                                 "1 image for training, 59,999 images for validation"),  # blamed --batch-size
    (["--data", "/nonexistent/folder"], "--data /nonexistent/folder: no such folder"),
    (["--out", "/dev/null/folder"], "--out /dev/null/folder: cannot create it (Not a directory)"),
    (["--dry-run", "--out", "/dev/null"], "--out /dev/null: not a folder"),
    (["--threads", "0"], "--threads must be 1 or more"),
    (["--log-interval", "0"], "--log-interval must be 1 or more"),
    (["--out", "/proc"], "--out /proc: cannot write there"),
    (["--steps", "ten"], "invalid int value"),
    (["--val-split", "1.5"], "--val-split must be in"),
    (["--early-stopping", "3"], "needs --val-split"),
    (["--resume", "/nonexistent/model.npz"], "no such model file"),
    (["--seed", "-1"], "--seed must be 0 or more, got -1"),
    (["--weight-decay", "inf"], "--weight-decay must be a number, 0 or more, got inf"),
    (["--hidden", "100000000"], "out of memory"),
    (["--warmup-steps", "500", "--steps", "100"], "--warmup-steps 500 is not shorter than --steps 100"),
    (["--val-split", "1e-9"], "--val-split 1e-09 holds out no image of the 60000 training images"),
    # the warm-up of the preset, not a "--warmup-steps 100" that the user never gave
    (["--preset", "fast", "--steps", "100"], "--preset fast warms up for 100 steps, not fewer than --steps 100: "
                                             "give more --steps, or --warmup-steps N under them"),
    (["--dry-run", "--momentum", "0.5"],  # sgd ran without it, not a word said
     "--momentum is for --optimizer momentum or nesterov; sgd uses no momentum"),
    (["--dry-run", "--steps", "200", "--preset", "fast", "--optimizer", "adam", "--momentum", "0.8"],
     "adam uses no momentum"),
])
def test_bad_flags_are_refused_at_once(tmp_path, flags, message):
    result = run_nn(*flags, "--out", tmp_path) if "--out" not in flags else run_nn(*flags)
    assert result.returncode in (1, 2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr and "Model:" not in result.stdout
    assert not (tmp_path / "stats.json").exists()


def test_a_missing_out_folder_is_created_with_its_parents(tmp_path):
    out = tmp_path / "new" / "deeper"
    refused = run_nn("--dry-run", "--steps", "-1", "--out", out)
    assert refused.returncode == 2 and not (tmp_path / "new").exists()  # a bad flag creates nothing
    result = run_nn("--dry-run", "--steps", 5, "--eval-every", 0, "--out", out)
    assert result.returncode == 0, result.stderr
    assert f"Created the folder {out} for the outputs" in result.stdout
    assert (out / "model_mnist.npz").exists() and (out / "stats.json").exists()


def test_bad_data_stops_before_training(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "mnist_train.csv").write_text("5," + ",".join(["0"] * 784) + "\n" + "3,1,2\n")
    (data_dir / "mnist_test.csv").write_text("5," + ",".join(["0"] * 784) + "\n")
    result = run_nn("--data", data_dir, "--out", tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"nn.py: error: {data_dir / 'mnist_train.csv'}, line 2: 3 values, "
                                     f"expected 785 (a label and 784 pixels) (fix the file, or delete it "
                                     f"to have it written again from the MNIST IDX files)")
    assert not (tmp_path / "model_mnist.npz").exists()


def test_a_test_csv_of_another_width_is_refused(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "mnist_train.csv").write_text(("5," + ",".join(["0"] * 784) + "\n") * 70)
    (data_dir / "mnist_test.csv").write_text("5," + ",".join(["0"] * 100) + "\n")
    result = run_nn("--data", data_dir, "--out", tmp_path)
    assert result.returncode == 1 and "mnist_test.csv, line 1: 101 values, expected 785" in result.stderr


def test_divergence_stops_and_keeps_the_previous_model(tmp_path):
    assert run_nn("--steps", 30, "--out", tmp_path, "--quiet").returncode == 0
    before = {name: (tmp_path / name).read_bytes() for name in OUTPUTS}
    result = run_nn("--lr", 50, "--steps", 2000, "--out", tmp_path)
    assert result.returncode == 1
    assert "training diverged" in result.stderr and "learning rate is probably too high" in result.stderr
    assert "the mean training loss of recent steps reached" in result.stderr  # the alarming figure, not the latest
    assert "try --lr 0.1, the default for sgd" in result.stderr
    assert {name: (tmp_path / name).read_bytes() for name in OUTPUTS} == before


def test_a_blow_up_to_overflow_is_one_line(tmp_path):
    """--lr 1e6 overflows the first product at once: NumPy's RuntimeWarnings (overflow in
    matmul, invalid value in subtract, each with its source line) came before the one line
    that says the training diverged."""
    result = run_nn("--lr", "1e6", "--dry-run", "--out", tmp_path, "--quiet")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("nn.py: error: training diverged: "), \
        result.stderr


def start_long_run(tmp_path, *extra):
    process = subprocess.Popen([sys.executable, str(PROJECT_DIR / "nn.py"), "--steps", "1000000", "--eval-every",
                                "0", "--log-interval", "200", "--out", str(tmp_path), *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:  # wait until training is under way
        if line.startswith("step"):
            return process
    raise AssertionError(process.stderr.read())


@pytest.mark.parametrize("signal_number, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_saves_what_was_reached(tmp_path, signal_number, status):
    process = start_long_run(tmp_path)
    sent = time.perf_counter()
    process.send_signal(signal_number)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == status
    assert time.perf_counter() - sent < 15  # stops at the next step; saving the plots takes a second or two
    stats = read_stats(tmp_path)
    assert stats["interrupted"] is True and 0 < stats["steps"] < 1000000
    assert model_file.load(tmp_path / "model_mnist.npz").all_finite()
    assert "saving what was reached" in output and "Interrupted by" in output


def test_second_interrupt_exits_at_once(tmp_path):
    process = start_long_run(tmp_path)
    process.send_signal(signal.SIGINT)
    for line in process.stdout:  # the first signal was seen: saving has begun
        if "saving what was reached" in line:
            break
    sent = time.perf_counter()
    process.send_signal(signal.SIGINT)
    rest, errors = process.communicate(timeout=30)
    assert process.returncode == 130
    assert time.perf_counter() - sent < 1.0
    assert "Interrupted by" not in rest  # it quit without finishing the save
    assert errors.strip().splitlines()[-1].startswith("nn.py: quit "), errors  # and said what it saved


def test_second_interrupt_into_a_new_out_folder_leaves_no_empty_folder(tmp_path):
    """--out new/deep, created by the run, then Ctrl-C twice: the second quit at once and
    left new/deep (and runs/DATE_TIME in it) empty behind, where the first Ctrl-C alone,
    before training, leaves nothing. Whatever the save wrote before the second stays."""
    process = start_long_run(tmp_path, "--out", str(tmp_path / "new" / "deep"))
    process.send_signal(signal.SIGINT)
    for line in process.stdout:
        if "saving what was reached" in line:
            break
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=30)
    assert process.returncode == 130 and "nn.py: quit " in errors, errors
    empty = [folder for folder in tmp_path.rglob("*") if folder.is_dir() and not any(folder.iterdir())]
    assert empty == [], empty
    if not (tmp_path / "new").exists():  # the usual case: the second arrives before the first file is written
        assert "nothing was saved" in errors or "wrote nothing to" in errors, errors


def test_second_signal_removes_the_run_folders_still_empty(tmp_path, monkeypatch, capfd):
    """Before the save (nothing written yet) a second signal removes the folders the run
    created, deepest first, and keeps a created folder that holds a file."""
    import nn
    kept, deep = tmp_path / "kept", tmp_path / "new" / "deep"
    deep.mkdir(parents=True), kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    monkeypatch.setattr(os, "_exit", lambda status: (_ for _ in ()).throw(SystemExit(status)))
    stop = signals.StopRequest([deep, deep.parent, kept])
    stop._handle(signal.SIGINT, None)  # the first: a request, seen at the next step
    assert deep.is_dir()
    with pytest.raises(SystemExit) as quit:
        stop._handle(signal.SIGINT, None)
    assert quit.value.code == 130 and "quit at once: nothing was saved" in capfd.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept", "notes.txt"]


def test_second_signal_during_a_write_leaves_no_temporary_file(tmp_path, monkeypatch, capfd):
    """A second Ctrl-C while a picture was being written (atomic_write) quit with os._exit,
    which skips atomic_write's clean-up: a stray .accuracy_graph.png.*.tmp stayed in --out."""
    import nn
    from app.atomic import atomic_write
    left_at_exit = []
    monkeypatch.setattr(os, "_exit", lambda status: (left_at_exit.extend(tmp_path.iterdir()), sys.exit(status)))
    stop = signals.StopRequest()
    stop._handle(signal.SIGINT, None)  # the first: a request
    with pytest.raises(SystemExit), atomic_write(tmp_path / "accuracy_graph.png") as f:
        f.write(b"half a picture")
        stop._handle(signal.SIGINT, None)  # the second, mid-write
    assert left_at_exit == [], left_at_exit
    assert "quit at once" in capfd.readouterr().err


def test_a_write_into_a_missing_folder_names_the_file_not_its_temporary_file(tmp_path):
    from app.atomic import atomic_write
    with pytest.raises(FileNotFoundError) as error, atomic_write(tmp_path / "gone" / "weights.png"):
        pass
    assert error.value.filename == str(tmp_path / "gone" / "weights.png")  # was .../gone/.weights.png.x1b2c3.tmp


def test_a_signal_the_parent_ignores_stays_ignored_during_training():
    """`nn.py &` from a script runs with Ctrl-C ignored: start-up kept it ignored, but
    StopRequest took it over, so that a Ctrl-C meant for the script stopped the training."""
    import nn
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with signals.StopRequest():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL  # the other signal is the run's as usual
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_second_interrupt_during_the_save_says_what_was_written(tmp_path):
    import nn
    stop = signals.StopRequest()
    (tmp_path / "stats.json").write_text("{}")
    stop.saving = (tmp_path, save.folder_contents(tmp_path))
    (tmp_path / "model_mnist.npz").write_bytes(b"PK")
    assert stop.quit_message() == (f"nn.py: quit during the save: wrote model_mnist.npz to {tmp_path}; not written: "
                                   f"stats.json, training_loss_graph.png, accuracy_graph.png, confusion_matrix.png, "
                                   f"misclassified.png, weights.png (what was there before is intact; a model replaced has its "
                                   f"copy under runs/)")


ALL_OUTPUTS = OUTPUTS + ("accuracy_graph.png", "confusion_matrix.png", "misclassified.png", "weights.png")
PICTURES = ("training_loss_graph.png", "accuracy_graph.png", "confusion_matrix.png", "misclassified.png", "weights.png")
# The writes of a run, in order (tests/hooked_nn.py counts them): the model and the five pictures into --out,
# the same bytes and stats.json into the run folder, then stats.json into --out, last.
WRITES = (("out", "model_mnist.npz"), *(("out", name) for name in PICTURES),
          ("run", "model_mnist.npz"), *(("run", name) for name in PICTURES), ("run", "stats.json"), ("out", "stats.json"))


def run_hooked(action, write_number, out_dir):
    """Run a short --dry-run into out_dir under tests/hooked_nn.py (see there)."""
    return subprocess.run([sys.executable, str(PROJECT_DIR / "tests" / "hooked_nn.py"), action, str(write_number),
                           "--dry-run", "--steps", "20", "--quiet", "--out", str(out_dir)],
                          capture_output=True, text=True, timeout=120)


def is_whole(path):
    """True when `path` is a complete output of its kind: a model that loads, JSON that
    parses, a PNG that ends with its IEND chunk."""
    if path.suffix == ".npz":
        try:
            return model_file.load(path).all_finite()
        except ValueError:
            return False
    if path.suffix == ".json":
        try:
            return isinstance(json.loads(path.read_text()), dict)
        except ValueError:
            return False
    content = path.read_bytes()
    return content.startswith(b"\x89PNG") and content.endswith(b"IEND\xaeB`\x82")


def test_sigkill_while_saving_leaves_each_output_old_or_new_and_whole(tmp_path):
    """SIGKILL halfway through each write, and between each rename and the next write:
    every output is then the previous run's or the new one, never half a file."""
    assert run_nn("--dry-run", "--steps", 20, "--seed", 1, "--out", tmp_path, "--quiet").returncode == 0
    before = {name: (tmp_path / name).read_bytes() for name in ALL_OUTPUTS}
    into_out = [n for n, (where, _) in enumerate(WRITES) if where == "out"]
    first_into_run, last_into_run = len(PICTURES) + 1, len(WRITES) - 2  # the run folder's model and stats.json
    points = ([("kill-midway", n) for n in [*into_out, first_into_run, last_into_run]]
              + [("kill-before", n) for n in into_out[1:]])
    for action, number in points:
        result = run_hooked(action, number, tmp_path)
        assert result.returncode == -signal.SIGKILL, (action, number, result.stderr)
        for name in ALL_OUTPUTS:
            assert is_whole(tmp_path / name), (action, number, name)
        for path in (tmp_path / "runs").glob("*/[!.]*"):  # a SIGKILL leaves a .tmp file, under no output's name
            assert is_whole(path), (action, number, path)
        renamed = {name for name in ALL_OUTPUTS if (tmp_path / name).read_bytes() != before[name]}
        assert renamed == {name for where, name in WRITES[:number] if where == "out"}, (action, number, renamed)
        for name in renamed:  # back to the previous run's outputs for the next kill
            (tmp_path / name).write_bytes(before[name])


@pytest.mark.parametrize("write_number", [0, len(WRITES) - 1])
def test_sigterm_while_saving_is_not_lost(tmp_path, write_number):
    """A SIGTERM that arrives while the model (or stats.json itself) is being written:
    the run finishes saving, stats.json says so, and the exit status is 143."""
    result = run_hooked("term-midway", write_number, tmp_path)
    assert result.returncode == 143, result.stderr
    stats = read_stats(tmp_path)
    assert stats["interrupted"] is True and stats["signal"] == "SIGTERM" and stats["ended"] == "completed"
    assert all(is_whole(tmp_path / name) for name in ALL_OUTPUTS)
    assert "SIGTERM arrived while saving" in result.stdout


@pytest.mark.parametrize("preset", ["fast", "best"])
def test_dry_run_of_a_preset_shrinks_its_warm_up_with_its_steps(preset, tmp_path):
    """A preset's warm-up (fast: 100 steps) is longer than a dry run's 50 steps; it was refused
    ('--warmup-steps 100 is not shorter than --steps 50'), a flag the user never gave."""
    import nn
    result = run_nn("--preset", preset, "--dry-run", "--quiet", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    config, recipe = read_stats(tmp_path)["config"], cli.PRESETS[preset]
    assert config["steps"] == 50 and config["warmup_steps"] == round(recipe["warmup_steps"] * 50 / recipe["steps"])


def test_resuming_with_fewer_steps_than_done_says_so_not_the_warm_up(tmp_path):
    """A model of --preset fast (warm-up 100, 1,700 steps) resumed with --steps 100 was told
    '--warmup-steps 100 is not shorter than --steps 100', a flag the user never gave."""
    assert run_nn("--dry-run", "--steps", 40, "--warmup-steps", 30, "--quiet", "--out", tmp_path).returncode == 0
    result = run_nn("--dry-run", "--resume", tmp_path / "model_mnist.npz", "--steps", 30, "--out", tmp_path)
    assert result.returncode == 2 and "warm" not in result.stderr, result.stderr
    assert "already trained for 40 steps; --steps 30 asks for none more" in result.stderr


def test_dry_run_writes_everything_quickly(tmp_path):
    started = time.perf_counter()
    result = run_nn("--dry-run", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert time.perf_counter() - started < 30
    stats = read_stats(tmp_path)
    assert stats["steps"] == 50
    for name in OUTPUTS:
        assert (tmp_path / name).exists()


def test_resume_continues_steps_and_curves(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    straight.mkdir(), resumed.mkdir()
    assert run_nn("--steps", 400, "--lr", 0.05, "--out", straight, "--quiet").returncode == 0
    assert run_nn("--steps", 200, "--lr", 0.05, "--out", resumed, "--quiet").returncode == 0
    result = run_nn("--resume", resumed / "model_mnist.npz", "--steps", 400, "--out", resumed)
    assert result.returncode == 0, result.stderr
    stats = read_stats(resumed)
    assert stats["steps"] == 400 and stats["config"]["lr"] == 0.05  # the resumed model's learning rate
    assert stats["loss_curve"]["step"][-1] == 400 and stats["loss_curve"]["step"][0] < 200
    assert "steps 201-400" in result.stdout and "Done: steps 201-400 (200 this run) in" in result.stdout
    # the same batches from the same weights: the very model of the straight run
    assert np.array_equal(model_file.load(resumed / "model_mnist.npz").flat_parameters,
                          model_file.load(straight / "model_mnist.npz").flat_parameters)
    assert stats["test_loss"] == read_stats(straight)["test_loss"]
    again = run_nn("--resume", resumed / "model_mnist.npz", "--steps", 400, "--out", resumed)
    assert again.returncode == 2 and "already trained for 400 steps" in again.stderr


def test_once_an_epoch_stays_once_an_epoch_on_resume(tmp_path):
    """A --dry-run model (31 steps an epoch) resumed on the full training set (937)
    evaluates once that epoch, not every 31 steps."""
    assert run_nn("--dry-run", "--steps", 40, "--out", tmp_path, "--quiet").returncode == 0
    _, info = model_file.load(tmp_path / "model_mnist.npz", with_info=True)
    assert info["config"]["eval_every"] is None and read_stats(tmp_path)["config"]["eval_every"] is None
    result = run_nn("--resume", tmp_path / "model_mnist.npz", "--steps", 100, "--out", tmp_path, "--quiet")
    assert result.returncode == 0, result.stderr
    assert [e["step"] for e in read_stats(tmp_path)["evaluations"]] == [31, 40, 100]


@pytest.mark.parametrize("change, message", [
    ({"lr": "0.1"}, 'lr is "0.1", expected a number'),
    ({"optimizer": "rmsprop"}, 'optimizer is "rmsprop", expected one of sgd, momentum, nesterov, adam'),
    ({"lr_schedule": "linear"}, 'lr_schedule is "linear", expected one of constant, step, cosine'),
    ({"hidden": [150, "150"]}, 'hidden is [150, "150"], expected a list of whole numbers'),
    ({"steps": True}, "steps is true, expected a whole number"),
    ({"eval_every": 2.5}, "eval_every is 2.5, expected a whole number or null"),
    ({"dropout": 1.5}, "--dropout must be in [0, 1), got 1.5"),
])
def test_a_bad_saved_configuration_is_refused_before_loading_data(tmp_path, change, message):
    config = {**nn_defaults(), **change}
    path = tmp_path / "bad.npz"
    model_file.save(MLP([784, 150, 150, 10]), path, config=config, steps_done=10)
    result = run_nn("--resume", path, "--steps", 20, "--out", tmp_path, "--data", tmp_path / "no-data-needed")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"nn.py: error: {path}: bad saved configuration: ") and message in lines[0]
    assert "Data:" not in result.stdout


def test_momentum_is_recorded_as_null_for_an_optimizer_without_it(tmp_path):
    """stats.json and the model said "momentum": 0.9 for sgd, which uses none. An older
    model that says 0.9 still resumes; null reads back as 0.9 when a resume turns to momentum."""
    old = tmp_path / "old.npz"  # as saved before: momentum 0.9 beside sgd
    model_file.save(MLP([784, 150, 150, 10]), old, config=dict(nn_defaults(), momentum=0.9, steps=10), steps_done=10)
    result = run_nn("--dry-run", "--resume", old, "--steps", 20, "--quiet", "--out", tmp_path / "sgd")
    assert result.returncode == 0, result.stderr
    _, info = model_file.load(tmp_path / "sgd" / "model_mnist.npz", with_info=True)
    assert info["config"]["momentum"] is None and read_stats(tmp_path / "sgd")["config"]["momentum"] is None
    result = run_nn("--dry-run", "--resume", tmp_path / "sgd" / "model_mnist.npz", "--steps", 30,
                    "--optimizer", "momentum", "--quiet", "--out", tmp_path / "momentum")
    assert result.returncode == 0, result.stderr
    assert read_stats(tmp_path / "momentum")["config"]["momentum"] == 0.9


def test_early_stopping_saves_the_best_model_with_its_own_step(tmp_path):
    """Patience never runs out: the run ends at --steps with later weights worse on
    validation. The model file holds the best weights with their step (where a resume
    starts) and their history; stats.json says both the last step and the weights' step."""
    result = run_nn("--dry-run", "--val-split", 0.5, "--early-stopping", 1000, "--eval-every", 50, "--steps", 800,
                    "--lr", 0.5, "--out", tmp_path, "--quiet")
    assert result.returncode == 0, result.stderr
    stats = read_stats(tmp_path)
    best = min(stats["evaluations"], key=lambda e: e["val_loss"])["step"]
    assert best < 800 and stats["steps"] == 800 and stats["weights_from_step"] == best
    _, info = model_file.load(tmp_path / "model_mnist.npz", with_info=True)
    assert info["steps_done"] == best and info["history"]["loss_steps"][-1] == best
    assert info["training_state"]["generator"] is None  # the generator of step 800 does not belong to these weights
    assert f"kept the weights of step {best}" in result.stdout


def nn_defaults():
    import nn
    return dict(cli.DEFAULTS)


def test_progress_on_a_terminal_is_one_updating_line_per_epoch(tmp_path):
    import os
    import pty
    main_fd, child_fd = pty.openpty()
    process = subprocess.Popen([sys.executable, str(PROJECT_DIR / "nn.py"), "--steps", "2000", "--out", str(tmp_path)],
                               stdout=child_fd, stderr=subprocess.PIPE, close_fds=True)
    os.close(child_fd)
    output = b""
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    process.wait(timeout=60)
    text = output.decode()
    assert process.returncode == 0
    assert "\r" in text and "Epoch 1/3 [" in text and "ETA" in text and "ms/step" in text
    closed = [line for line in text.replace("\r\n", "\n").split("\n") if line.startswith("\rEpoch") or "test_accuracy:" in line]
    assert len([line for line in closed if "test_accuracy:" in line]) == 3  # one closed line per epoch


def git_output(*arguments):
    """What `git -C PROJECT_DIR ARGUMENTS` prints, or None if it fails or git is missing."""
    try:
        result = subprocess.run(["git", "-C", str(PROJECT_DIR), *arguments], capture_output=True, text=True)
    except FileNotFoundError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


needs_git_checkout = pytest.mark.skipif(git_output("rev-parse", "--show-toplevel") is None,
                                        reason="benchmark.py --against compares git revisions")


def run_benchmark(*flags, script=PROJECT_DIR / "benchmarks" / "benchmark.py"):
    return subprocess.run([sys.executable, str(script), *map(str, flags)], capture_output=True, text=True,
                          timeout=300)


@needs_git_checkout
def test_benchmark_script_runs_with_tiny_sizes(tmp_path):
    """The whole benchmark, tiny, with --against HEAD: HEAD's own workers, exported, run in
    the same repeats and get their rows and ratios."""
    result = run_benchmark("--steps", 20, "--warmup", 5, "--repeats", 1, "--threads", 1, "--no-torch",
                           "--no-full-run", "--json", tmp_path / "b.json", "--against", "HEAD")
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "b.json").read_text())
    loop = results["loop"]["1"]
    # ratios of single timings of 20 steps: on a busy machine only their sign and finiteness are sure
    assert 0 < loop["numpy_over_matmul"] < math.inf and 0 < loop["flat_over_matmul"] < math.inf
    assert results["data"]["cache_load_s"] < results["data"]["csv_parse_s"]
    assert "project training loop" in result.stdout
    assert results["against"]["commit"] == git_output("rev-parse", "HEAD")
    assert results["against"]["cache_used"] is True  # the CSV linked, its cache copied: still valid
    assert 0 < loop["rev_numpy_over_rev_matmul"] < math.inf and len(loop["rev_numpy"]["samples"]) == 1
    ratio = loop["numpy"]["median_s_per_step"] / loop["rev_numpy"]["median_s_per_step"]
    assert loop["numpy_over_rev_numpy"] == ratio
    assert "HEAD: its training loop" in result.stdout and "HEAD: its 8 matrix products" in result.stdout
    assert (f"loop/products, 1 thread: this tree {loop['numpy_over_matmul']:.2f}x, HEAD "
            f"{loop['rev_numpy_over_rev_matmul']:.2f}x (same run); this tree's loop takes {ratio:.2f}x the time "
            "of HEAD's") in result.stdout


@needs_git_checkout
@pytest.mark.parametrize("revision, reason", [
    ("no-such-revision", f"unknown revision in {PROJECT_DIR}"),
    ("HEAD:nn.py", f"unknown revision in {PROJECT_DIR}"),  # a file, not a commit
    ("ROOT", "too old: it has no benchmarks/benchmark.py"),  # the first commit
])
def test_benchmark_against_a_bad_revision_stops_before_timing(tmp_path, revision, reason):
    if revision == "ROOT":
        revision = git_output("rev-list", "--max-parents=0", "HEAD").split()[0]
        if git_output("cat-file", "-e", f"{revision}:benchmarks/benchmark.py") is not None:
            pytest.skip("a shallow clone: its oldest commit has a benchmark")
    result = run_benchmark("--json", tmp_path / "b.json", "--against", revision)
    assert result.returncode == 2
    assert result.stderr == f"benchmark.py: error: --against {revision}: {reason}\n"
    assert result.stdout == "" and not (tmp_path / "b.json").exists()


def test_benchmark_against_outside_a_git_checkout_says_so(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    script = tmp_path / "benchmarks" / "benchmark.py"
    script.write_bytes((PROJECT_DIR / "benchmarks" / "benchmark.py").read_bytes())
    result = run_benchmark("--against", "HEAD", script=script)
    assert result.returncode == 2
    assert result.stderr in (f"benchmark.py: error: --against HEAD: {tmp_path.resolve()} is not a git checkout\n",
                             "benchmark.py: error: --against HEAD: git is not installed\n")


@pytest.mark.parametrize("command", [["--resume", "README.md"], ["predict", "--model", "README.md", "digit.png"]])
def test_a_file_that_is_not_a_model_is_named_as_such(command, tmp_path):
    from PIL import Image
    readme, digit = PROJECT_DIR / "README.md", tmp_path / "digit.png"
    Image.fromarray(np.pad(np.full((18, 4), 255, dtype=np.uint8), ((5, 5), (12, 12)))).save(digit)  # a 1
    result = run_nn(*[{"README.md": readme, "digit.png": digit}.get(word, word) for word in command])
    assert result.returncode == 1
    assert result.stderr == f"{result.stderr.split(':')[0]}: error: {readme}: not a model file (not an .npz archive)\n"
    assert "pickle" not in result.stderr and "unsafe" not in result.stderr


def test_default_learning_rate_follows_the_optimizer(tmp_path):
    """--optimizer adam without --lr trains at adam's default, 0.001, not sgd's 0.1."""
    result = run_nn("--optimizer", "adam", "--dry-run", "--quiet", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert read_stats(tmp_path)["config"]["lr"] == 0.001


def test_divergence_advice_never_repeats_the_learning_rate_used():
    import nn
    assert report.divergence_advice({"optimizer": "adam", "lr": 0.1}) == "try --lr 0.001, the default for adam"
    advice = report.divergence_advice({"optimizer": "sgd", "lr": 0.1})
    assert "0.01" in advice and "0.1," not in advice and "default" not in advice


def test_flag_choices_match_the_modules():
    """nn.py spells the choices out so that it can parse the flags before importing NumPy."""
    import functions
    import nn
    import optimizers
    assert cli.OPTIMIZER_NAMES == optimizers.OPTIMIZERS and set(cli.DEFAULT_LR) == set(optimizers.OPTIMIZERS)
    assert set(cli.HIDDEN_ACTIVATIONS) == set(functions.ACTIVATIONS) - {"linear"}


def test_threads_flag_is_read_as_argparse_reads_it(tmp_path):
    """An abbreviation argparse accepts (--thread) sets the BLAS threads too; more threads
    than cores get a one-line warning."""
    import os
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    result = run_nn("--thread", cores + 1, "--dry-run", "--quiet", "--out", tmp_path, env={"OPENBLAS_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert read_stats(tmp_path)["environment"]["blas_threads"] == cores + 1
    assert result.stderr.strip() == (f"nn.py: warning: --threads {cores + 1} is more than the {cores} CPU cores "
                                     f"this process may use; the extra threads only wait for a core and slow the "
                                     f"run down")


def test_a_run_without_evaluations_leaves_no_earlier_accuracy_graph(tmp_path):
    assert run_nn("--dry-run", "--eval-every", 25, "--quiet", "--out", tmp_path).returncode == 0
    assert (tmp_path / "accuracy_graph.png").exists()
    assert run_nn("--dry-run", "--eval-every", 0, "--quiet", "--out", tmp_path).returncode == 0
    assert read_stats(tmp_path)["evaluations"] == [] and not (tmp_path / "accuracy_graph.png").exists()


def test_every_run_keeps_a_copy_and_no_model_is_replaced_without_a_word(tmp_path):
    """A run writes to --out as the original does, and to its own folder under runs/; a
    model it replaces keeps a copy there (made now for a model from before runs/ existed),
    and the run says so in one line. predict names the model it uses."""
    import shutil
    assert run_nn("--dry-run", "--quiet", "--out", tmp_path).returncode == 0
    shutil.rmtree(tmp_path / "runs")  # as if trained before runs/ existed
    first_model = (tmp_path / "model_mnist.npz").read_bytes()
    result = run_nn("--dry-run", "--steps", 20, "--quiet", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    replaced = [line for line in result.stdout.splitlines() if "Replaced model_mnist.npz" in line]
    assert len(replaced) == 1 and "(50 steps, test accuracy " in replaced[0], result.stdout
    copy = Path(replaced[0].split("its copy is ")[1])
    assert copy.read_bytes() == first_model
    this_run = tmp_path / read_stats(tmp_path)["run_folder"]
    assert (this_run / "model_mnist.npz").read_bytes() == (tmp_path / "model_mnist.npz").read_bytes()
    assert read_stats(this_run)["steps"] == 20 and (this_run / "training_loss_graph.png").is_file()
    again = run_nn("--dry-run", "--steps", 30, "--quiet", "--out", tmp_path)
    assert f"its copy is {this_run / 'model_mnist.npz'}" in again.stdout  # no second copy of a kept model
    assert len(list((tmp_path / "runs").iterdir())) == 3
    predict = run_nn("predict", "--model", tmp_path / "model_mnist.npz", PROJECT_DIR / "docs" / "accuracy_graph.png")
    assert predict.stderr.startswith(f"Model: {tmp_path / 'model_mnist.npz'} (") and "30 steps, test accuracy" in predict.stderr


def test_optimizer_comparison_leaves_the_tracked_picture_alone_by_default():
    import importlib.util
    spec = importlib.util.spec_from_file_location("compare_optimizers",
                                                  PROJECT_DIR / "benchmarks" / "compare_optimizers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.build_parser().parse_args([]).out == PROJECT_DIR / "benchmarks" / "results" / "optimizers.png"


def test_interrupt_while_numpy_loads_is_one_line(tmp_path):
    """Ctrl-C in the first fraction of a second, while NumPy and the modules load, gave a
    KeyboardInterrupt traceback from inside an import. A stand-in numpy found first on
    PYTHONPATH says when the import has begun, then waits for the signal."""
    stand_in = tmp_path / "numpy"
    stand_in.mkdir()
    (stand_in / "__init__.py").write_text("import pathlib, time\n"
                                          f"pathlib.Path({str(tmp_path / 'importing')!r}).touch()\n"
                                          "time.sleep(30)\n")
    process = subprocess.Popen([sys.executable, str(PROJECT_DIR / "nn.py"), "--out", str(tmp_path / "out")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    deadline = time.monotonic() + 60
    while not (tmp_path / "importing").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert (process.returncode, err, out) == (130, "nn.py: interrupted while starting; nothing was written\n", "")
    assert not (tmp_path / "out").exists()


def test_sigint_ignored_by_the_parent_stays_ignored_while_starting(tmp_path):
    """A parent that makes its child ignore SIGINT (a script's `python nn.py &`: a Ctrl-C
    meant for the script) kept nn.py running; the handler of the starting window ended it
    with status 130. The stand-in numpy says when the import has begun, waits for the
    signal to be sent, gives it time to arrive, then ends the program with status 7."""
    stand_in = tmp_path / "numpy"
    stand_in.mkdir()
    (stand_in / "__init__.py").write_text("import pathlib, sys, time\n"
                                          f"pathlib.Path({str(tmp_path / 'importing')!r}).touch()\n"
                                          f"while not pathlib.Path({str(tmp_path / 'sent')!r}).exists():\n"
                                          "    time.sleep(0.01)\n"
                                          "time.sleep(0.5)\n"
                                          "sys.exit(7)\n")
    process = subprocess.Popen([sys.executable, str(PROJECT_DIR / "nn.py"), "--out", str(tmp_path / "out")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=str(tmp_path)),
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 60
    while not (tmp_path / "importing").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    (tmp_path / "sent").touch()
    out, err = process.communicate(timeout=60)
    assert (process.returncode, err, out) == (7, "", "")


def test_interrupt_in_predict_is_one_line(monkeypatch, capsys):
    """predict says nothing of its own about Ctrl-C: it ended in a KeyboardInterrupt traceback."""
    import nn
    from app import predict

    def interrupted(argv):
        raise KeyboardInterrupt
    monkeypatch.setattr(predict, "main", interrupted)
    assert errors.quiet_on_closed_output(nn.main, ["predict", "digit.png"]) == 130
    assert capsys.readouterr().err == "nn.py: interrupted\n"


def test_interrupt_during_data_setup_names_what_was_written(tmp_path, monkeypatch, capsys):
    """Ctrl-C while the CSVs are being written: the message lists the CSV already
    written, instead of claiming that nothing was."""
    import nn

    def write_one_csv_then_interrupt(data_dir, idx_dirs, log):
        (data_dir / "mnist_train.csv").write_text("5," + ",".join(["0"] * 784) + "\n")
        raise KeyboardInterrupt

    (tmp_path / "old.csv").write_text("here before\n")
    monkeypatch.setattr(data, "load_mnist", write_one_csv_then_interrupt)
    assert nn.main(["--data", str(tmp_path), "--out", str(tmp_path), "--quiet"]) == 130
    message = capsys.readouterr().err
    assert message.startswith("nn.py: interrupted before training started; it wrote mnist_train.csv in ")
    assert "old.csv" not in message and "nothing was written" not in message


@pytest.mark.parametrize("threads, cores, load, expected", [
    (None, 2, 3.0, None), (1, 2, 5.0, None), (2, 2, 0.1, None), (2, 16, 3.0, None), (4, 16, 12.4, None),
    (2, 2, 1.2, "--threads 2, but other programs keep about 1 of the 2 CPU cores busy (load average 1.2)"),
    (2, 2, 7.0, "--threads 2, but other programs keep about 2 of the 2 CPU cores busy (load average 7.0)"),
    (8, 16, 9.6, "--threads 8, but other programs keep about 10 of the 16 CPU cores busy"),
])
def test_threads_beside_busy_cores_get_a_warning(threads, cores, load, expected):
    """--threads 2 while another program keeps one of two cores busy ran at 17 steps/s:
    the run says so when the load average leaves fewer idle cores than threads."""
    import nn
    warning = startup.busy_cores_warning(threads, cores, load)
    assert warning is None if expected is None else warning.startswith(f"nn.py: warning: {expected}")


@pytest.mark.parametrize("make_it", ["file", "folder in the place of an output"])
def test_runs_or_an_output_that_cannot_be_written_is_refused_before_the_data_loads(tmp_path, make_it):
    """A `runs` that is a file (or an output name taken by a folder) failed with a traceback
    after the whole training; it is now refused up front, in one line, exit status 2."""
    if make_it == "file":
        (tmp_path / "runs").write_text("not a folder\n")
        expected = f"nn.py: error: {tmp_path / 'runs'}: not a folder; every run copies its outputs into runs/"
    else:
        (tmp_path / "weights.png").mkdir()
        expected = f"nn.py: error: {tmp_path / 'weights.png'}: a folder where the run writes its weights.png"
    result = run_nn("--dry-run", "--quiet", "--out", tmp_path)
    assert result.returncode == 2 and result.stderr.startswith(expected), result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Data:" not in result.stdout
    assert not (tmp_path / "model_mnist.npz").exists()


def test_paths_too_long_to_look_at_are_one_line(tmp_path):
    """--out, --data and serve --model with a name of 300 characters ended in a traceback
    (OSError 'File name too long' from Path.exists and Path.is_dir)."""
    too_long = tmp_path / ("x" * 300)
    result = run_nn("--dry-run", "--quiet", "--out", too_long)
    assert result.returncode == 2 and result.stderr == f"nn.py: error: --out {too_long}: cannot create it " \
                                                       f"(File name too long)\n", result.stderr
    result = run_nn("--dry-run", "--quiet", "--data", too_long, "--out", tmp_path)
    assert result.returncode == 2 and result.stderr == f"nn.py: error: --data {too_long}: no such folder\n"
    result = run_nn("serve", "--model", too_long / "model_mnist.npz", "--port", 0, timeout=60)
    assert result.returncode != 0 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "File name too long" in result.stderr and "Traceback" not in result.stderr


def test_a_runs_link_to_nothing_is_named_as_such(tmp_path):
    """A runs/ that is a link to a missing folder was called 'not a folder' with the advice
    to 'move the file away': it is a link, and its target is what is missing."""
    (tmp_path / "runs").symlink_to(tmp_path / "unplugged_disk")
    result = run_nn("--dry-run", "--quiet", "--out", tmp_path)
    assert result.returncode == 2 and result.stderr == (
        f"nn.py: error: {tmp_path / 'runs'}: a link to {tmp_path / 'unplugged_disk'}, which does not exist; every run "
        f"copies its outputs into runs/ in --out (create that folder, remove the link, or choose another --out)\n")
    (tmp_path / "runs").unlink()
    (tmp_path / "runs").symlink_to("runs")  # a link to itself
    result = run_nn("--dry-run", "--quiet", "--out", tmp_path)
    assert result.returncode == 2 and f"runs: a link to {tmp_path / 'runs'}, itself a link that leads nowhere; " \
        in result.stderr, result.stderr


def test_an_error_while_saving_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    """A disk that fills up during the save: one line naming the file and what was written,
    exit status 1, and the outputs not yet written keep their previous version."""
    import nn
    from app import atomic
    assert nn.main(["--dry-run", "--steps", "20", "--quiet", "--out", str(tmp_path)]) == 0
    previous_stats = (tmp_path / "stats.json").read_bytes()
    real_fsync = os.fsync

    def disk_full(fd):  # weights.png's bytes do not fit on the disk
        if any(os.path.basename(name).startswith(".weights.png.") for name in atomic._unfinished):
            raise OSError(28, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", disk_full)
    capsys.readouterr()
    assert nn.main(["--dry-run", "--steps", "30", "--quiet", "--out", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"nn.py: error: cannot save: {tmp_path / 'weights.png'}: No space left on device; "
                            f"wrote model_mnist.npz, "), error
    assert len(error.splitlines()) == 1 and "not written: stats.json, weights.png" in error
    assert (tmp_path / "stats.json").read_bytes() == previous_stats


def test_out_of_memory_during_the_save_says_what_was_written(tmp_path, monkeypatch, capsys):
    """Memory running out after model_mnist.npz was replaced: the line says so, as for a
    full disk. It said 'nothing was saved, earlier outputs are intact' (nn.main's line for
    memory running out while training), with the old model's stats.json beside a new model."""
    import nn
    from app import plots
    assert nn.main(["--dry-run", "--steps", "20", "--quiet", "--out", str(tmp_path)]) == 0
    previous_stats = (tmp_path / "stats.json").read_bytes()

    def out_of_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(plots, "first_layer_weights", out_of_memory)
    capsys.readouterr()
    assert nn.main(["--dry-run", "--steps", "30", "--quiet", "--out", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("nn.py: error: cannot save: out of memory; wrote model_mnist.npz, "), error
    assert len(error.splitlines()) == 1 and "not written: stats.json, weights.png" in error
    assert (tmp_path / "stats.json").read_bytes() == previous_stats
    assert all(any(folder.iterdir()) for folder in (tmp_path / "runs").iterdir())  # no empty run folder


def test_a_save_refused_by_the_file_system_names_the_output_and_leaves_no_empty_run_folder(tmp_path, monkeypatch,
                                                                                           capsys):
    """The rename of a temporary file refused (an immutable folder, say): the message names
    the output (weights.png), not its temporary file, and the run folder the save had made
    is removed again rather than left empty."""
    from app import atomic
    import nn
    real_replace = os.replace

    def refuse_weights(source, target):
        if str(target).endswith("weights.png"):
            raise OSError(1, "Operation not permitted", str(source), str(target))
        return real_replace(source, target)

    monkeypatch.setattr(atomic.os, "replace", refuse_weights)
    assert nn.main(["--dry-run", "--steps", "20", "--quiet", "--out", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"nn.py: error: cannot save: {tmp_path / 'weights.png'}: Operation not permitted; "), error
    assert not list((tmp_path / "runs").iterdir())  # the new run folder, still empty, was removed
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("flags, resumed, lr", [
    (["--optimizer", "adam"], {"optimizer": "sgd", "lr": 0.1}, 0.001),  # kept sgd's 0.1 before: adam diverged
    (["--optimizer", "momentum"], {"optimizer": "adam", "lr": 0.002}, 0.01),
    ([], {"optimizer": "sgd", "lr": 0.05}, 0.05),  # same optimizer: the resumed run's rate
    (["--optimizer", "adam"], {"optimizer": "adam", "lr": 0.0005}, 0.0005),
    (["--optimizer", "adam", "--lr", "0.3"], {"optimizer": "sgd", "lr": 0.1}, 0.3),  # --lr always wins
    (["--lr", "0.3"], {"optimizer": "sgd", "lr": 0.1}, 0.3),
    (["--optimizer", "nesterov"], None, 0.01),
])
def test_learning_rate_on_resume_follows_the_optimizer(flags, resumed, lr):
    import nn
    args = cli.build_parser().parse_args(flags)
    assert cli.resolve_config(args, resumed)["lr"] == lr


def test_resume_says_which_learning_rate_it_uses_and_why(tmp_path):
    assert run_nn("--dry-run", "--steps", 20, "--quiet", "--out", tmp_path).returncode == 0
    result = run_nn("--dry-run", "--steps", 30, "--resume", tmp_path / "model_mnist.npz", "--optimizer", "adam",
                    "--out", tmp_path / "adam")
    assert result.returncode == 0, result.stderr
    assert "Learning rate 0.001: the default for adam, as the resumed run used sgd" in result.stdout
    assert read_stats(tmp_path / "adam")["config"]["lr"] == 0.001
    # on a schedule, the rate named is its highest, not the one the next steps take (the schedule's note)
    assert run_nn("--dry-run", "--steps", 20, "--quiet", "--lr-schedule", "cosine", "--out", tmp_path / "cosine",
                  ).returncode == 0
    result = run_nn("--dry-run", "--steps", 30, "--resume", tmp_path / "cosine" / "model_mnist.npz",
                    "--out", tmp_path / "cosine")
    assert "Learning rate 0.1 (the cosine schedule's highest): the resumed run's" in result.stdout, result.stdout


def test_help_lists_every_command_one_line_each():
    """--help named predict only: serve, the third command, was missing from it."""
    result = run_nn("--help")
    assert result.returncode == 0
    commands = result.stdout.split("commands (each has its own --help):\n")[1].splitlines()
    assert [line.split()[2] for line in commands] == ["[FLAGS]", "predict", "serve"]
    assert max(map(len, result.stdout.splitlines())) < 80


def test_the_loss_graph_states_the_recipe_of_its_curve():
    """The title said 'nesterov, lr 0.05, batch 128' for --preset best: no schedule, warm-up,
    steps or regularisers, so two different curves could carry the same title."""
    import nn
    assert report.recipe_text(cli.DEFAULTS) == "sgd, lr 0.1 constant, batch 64, 20,000 steps"
    best = dict(cli.DEFAULTS, **cli.PRESETS["best"])
    assert report.recipe_text(best) == ("nesterov 0.9, lr 0.05 cosine (warm-up 500), batch 128, 24,000 steps, "
                                    "dropout 0.2, shifts 2 px")
    assert report.recipe_text(dict(best, lr_schedule="step", warmup_steps=0, optimizer="adam", lr=0.001)).startswith(
        "adam, lr 0.001 step, batch 128")


def test_the_graphs_of_an_interrupted_run_end_where_it_stopped_and_say_so():
    """Ctrl-C at step 11,030: the loss graph showed the final test there, the accuracy graph
    ended at the evaluation of step 10,307, and both subtitles said '20,000 steps' with no
    word of the stop."""
    import nn
    evaluations = [{"step": 9370, "test_loss": 0.07, "test_accuracy": 0.978},
                   {"step": 10307, "test_loss": 0.071, "test_accuracy": 0.9786}]
    history = {"evaluations": evaluations, "steps_done": 11030, "last_step": 11030, "ended": "interrupted"}
    stats = {"test_loss": 0.069, "test_accuracy": 0.9788}
    assert report.graph_evaluations(history, stats) == evaluations + [
        {"step": 11030, "test_loss": 0.069, "test_accuracy": 0.9788}]
    assert report.graph_subtitle(cli.DEFAULTS, history) == (
        "sgd, lr 0.1 constant, batch 64, 20,000 steps; interrupted at step 11,030")
    completed = dict(history, evaluations=evaluations[:1], steps_done=9370, last_step=9370, ended="completed")
    assert report.graph_evaluations(completed, stats) == evaluations[:1]  # its last evaluation is the final test's step
    assert report.graph_subtitle(cli.DEFAULTS, completed) == "sgd, lr 0.1 constant, batch 64, 20,000 steps"
    early = dict(history, steps_done=10307, last_step=12000, ended="early_stopping")
    assert report.graph_subtitle(cli.DEFAULTS, early).endswith("; early stopping at step 12,000")


def test_a_runs_folder_that_cannot_be_written_is_refused_before_the_data_loads(tmp_path, monkeypatch, capsys):
    """An unwritable runs/ (tests run as root here, so the refusal of the system is simulated)."""
    import tempfile

    import nn
    (tmp_path / "runs").mkdir()
    real_temporary_file = tempfile.TemporaryFile

    def refused_in_runs(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).name == "runs":
            raise PermissionError(13, "Permission denied")
        return real_temporary_file(*args, dir=dir, **kwargs)

    monkeypatch.setattr(save.tempfile, "TemporaryFile", refused_in_runs)
    monkeypatch.setattr(data, "load_mnist", lambda *args, **kwargs: pytest.fail("the data was loaded"))
    assert nn.main(["--dry-run", "--quiet", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"nn.py: error: {tmp_path / 'runs'}: cannot write there (Permission denied); "
                                       f"every run copies its outputs into runs/ in --out\n")


def test_a_run_refused_after_creating_its_folder_leaves_no_folder_behind(tmp_path):
    """--out a/b that did not exist, then a refusal that needs the data (a batch larger than
    the images): the folders made for the outputs are removed again, not left empty."""
    out = tmp_path / "new" / "out"
    result = run_nn("--dry-run", "--batch-size", "100000", "--out", out)
    assert result.returncode == 2 and "larger than the 2,000 training images" in result.stderr
    assert not (tmp_path / "new").exists()


def test_the_model_line_states_the_whole_recipe_and_stats_the_thread_count(tmp_path):
    """--preset fast's Model line left out its schedule and warm-up; stats.json gave the BLAS
    threads as the text "1"."""
    result = run_nn("--preset", "fast", "--steps", "120", "--eval-every", "0", "--threads", "1", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    model_line = next(line for line in result.stdout.splitlines() if line.startswith("Model: "))
    assert "nesterov 0.9, lr 0.2 cosine (warm-up 100), batch 128, 120 steps, seed 0" in model_line, model_line
    assert json.loads((tmp_path / "stats.json").read_text())["environment"]["blas_threads"] == 1


def test_one_sigterm_sent_twice_as_gnu_timeout_does_is_one_request(tmp_path):
    """GNU timeout sends SIGTERM to the process and then to its process group: the run
    must take the two as one request (save, exit 143), not as a second signal that quits
    at once without saving."""
    process = subprocess.Popen([sys.executable, str(PROJECT_DIR / "nn.py"), "--dry-run", "--steps", "100000",
                                "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
    while "Model: " not in process.stdout.readline():
        pass
    time.sleep(0.5)  # training
    process.send_signal(signal.SIGTERM)
    time.sleep(0.05)  # timeout's two are a few microseconds apart; 50 ms lets Python handle the first one first
    process.send_signal(signal.SIGTERM)
    output, errors = process.communicate(timeout=120)
    assert process.returncode == 143 and "quit at once" not in errors, errors
    assert json.loads((tmp_path / "stats.json").read_text())["signal"] == "SIGTERM"


def test_the_loss_graph_shows_the_final_test_loss_of_a_run_without_evaluations(tmp_path, monkeypatch):
    """--preset fast evaluates only after training: its loss graph had no test loss at all."""
    import nn
    from app import plots
    drawn = {}
    monkeypatch.setattr(plots, "loss_graph", lambda path, steps, losses, evaluations, **_: drawn.update(
        evaluations=evaluations))
    assert nn.main(["--dry-run", "--steps", "30", "--eval-every", "0", "--quiet", "--out", str(tmp_path)]) == 0
    stats = read_stats(tmp_path)
    assert stats["evaluations"] == []  # stats.json keeps what was evaluated during training: nothing
    assert drawn["evaluations"] == [{"step": 30, "test_loss": stats["test_loss"], "test_accuracy": stats["test_accuracy"]}]
    assert nn.main(["--dry-run", "--steps", "30", "--eval-every", "15", "--quiet", "--out", str(tmp_path)]) == 0
    assert [e["step"] for e in drawn["evaluations"]] == [15, 30]  # the last evaluation is the final test already


# ------------------------------------------- evaluations in the background (monitor.Evaluations)

class SlowEvaluations:
    """monitor.evaluate_sets taking at least `seconds`: an evaluation in the background then
    ends many steps after its own (a step of the small network takes a fraction of a ms)."""

    def __init__(self, seconds):
        import nn
        self.evaluate_sets, self.seconds = monitor.evaluate_sets, seconds

    def __call__(self, *args):
        time.sleep(self.seconds)
        return self.evaluate_sets(*args)


class StopAtStep:
    """A progress object's step hook that sets stop.signal at `step`, as a Ctrl-C would."""

    def __init__(self, progress, stop, step):
        self.progress, self.stop, self.step_to_stop = progress, stop, step

    def __getattr__(self, name):
        return getattr(self.progress, name)

    def step(self, step, loss):
        self.progress.step(step, loss)
        if step == self.step_to_stop:
            self.stop.signal = signal.SIGINT


def train_small_run(monkeypatch, in_background, config=None, stop_at=None, evaluation_s=0.05, log_interval=None):
    """(history, the lines a terminal 100 columns wide shows) of nn.train on random data
    (10 steps an epoch), with its evaluations in the background or in place."""
    import io
    import re

    import nn
    from app.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setattr(startup, "evaluations_in_background", lambda: in_background)
    monkeypatch.setattr(monitor, "evaluate_sets", SlowEvaluations(evaluation_s))
    data_rng = np.random.default_rng(5)
    images, labels = data_rng.integers(0, 256, (320, 784), np.uint8), data_rng.integers(0, 10, 320)
    eval_sets = {"test": (data_rng.integers(0, 256, (500, 784), np.uint8), data_rng.integers(0, 10, 500)),
                 "val": (data_rng.integers(0, 256, (200, 784), np.uint8), data_rng.integers(0, 10, 200))}
    config = dict(cli.DEFAULTS, steps=23, batch_size=32, hidden=[20], lr=0.05, **(config or {}))
    rng = np.random.default_rng(0)
    model = model_file.new_model(config, rng)
    terminal = Terminal() if log_interval is None else io.StringIO()  # a log: plain lines
    progress = Progress(config["steps"], 10, log_interval=log_interval, stream=terminal, refresh_per_second=1e9)
    stop = signals.StopRequest()
    if stop_at is not None:
        progress = StopAtStep(progress, stop, stop_at)
    history = nn.train(model, config, (images, labels), eval_sets, rng, progress, stop)
    history["weights"] = model.flat_parameters.tolist()
    state = history.pop("training_state")  # arrays made plain, to compare with ==
    history["training_state"] = {key: value.tolist() if isinstance(value, np.ndarray) else value
                                 for key, value in state.items() if key != "optimizer_arrays"}
    lines = []  # the terminal's lines: each \r starts the line again, \x1b[K clears its rest
    for line in terminal.getvalue().split("\n"):
        lines.append(re.sub(r"\x1b\[K", "", line.split("\r")[-1]))
    return history, lines


@pytest.mark.parametrize("config, stop_at, steps", [
    ({}, None, [10, 20, 23]),                                 # once an epoch (10 steps), and the last step
    ({"eval_every": 3}, None, [3, 6, 9, 12, 15, 18, 21, 23]),  # more often than they can be made
    ({"eval_every": 7}, 12, [7]),                             # a Ctrl-C at step 12, an evaluation under way
    ({"early_stopping": 1, "eval_every": 4}, None, None),     # early stopping waits for each
])
def test_evaluations_in_the_background_are_those_made_in_place(monkeypatch, config, stop_at, steps):
    """The same evaluations (steps and numbers), losses, weights and end, and the same lines
    on a terminal, whether each evaluation is made in place or beside the training while
    it goes on (each one taking 50 ms: tens of steps go by meanwhile)."""
    import re
    in_place, in_place_lines = train_small_run(monkeypatch, False, config, stop_at)
    background, background_lines = train_small_run(monkeypatch, True, config, stop_at)
    assert background == in_place
    if steps is not None:
        assert [e["step"] for e in in_place["evaluations"]] == steps
    else:
        assert in_place["ended"] == "early_stopping" and in_place["last_step"] < 23

    def without_times(lines):
        return [re.sub(r"[\d.]+ ms/step|ETA [\d.]+s| - [\d.]+s - ", "", line) for line in lines]  # and an epoch's time
    if not config:  # once an epoch: each epoch's line ends with its evaluation, in both
        assert all(line.startswith(f"Epoch {n}/3") and "test: loss" in line
                   for n, line in enumerate(in_place_lines[:3], 1)), in_place_lines
        assert without_times(background_lines) == without_times(in_place_lines)
    else:  # an evaluation in mid-epoch is shown when it is made: later, in the background
        assert ([line for line in background_lines if "evaluation at" in line]
                == [line for line in in_place_lines if "evaluation at" in line])


@pytest.mark.parametrize("config", [{}, {"eval_every": 3}])
def test_a_log_shows_the_evaluations_in_the_background_where_it_shows_those_made_in_place(monkeypatch, config):
    """In a log (not a terminal), an evaluation made in the background was written when it
    ended: 'step 1000' came before 'evaluation at step 937' in 2 runs of 3. Every line of
    a log now comes in the order it has with the evaluations made in place."""
    import re

    def without_times(lines):
        return [re.sub(r"\d+ steps/s  ETA \S+", "", line) for line in lines]
    in_place = train_small_run(monkeypatch, False, config, log_interval=2)[1]
    background = train_small_run(monkeypatch, True, config, log_interval=2)[1]
    assert sum("evaluation at step" in line for line in in_place) == {0: 3, 1: 8}[bool(config)]
    assert without_times(background) == without_times(in_place)


def test_a_signal_while_the_loop_collects_evaluations_waits_for_the_one_under_way(monkeypatch):
    """A Ctrl-C arriving after the loop decided not to wait for the evaluation under way,
    and before it checked for a stop, ended the run at once: the evaluation (of step 7,
    made beside the training) was dropped from the history, which one made in place kept.
    Here the signal arrives while the loop collects the finished evaluations at step 7."""
    stops, started = [], []
    make_stop, start, record_finished = signals.StopRequest, monitor.Evaluations.start, monitor.Evaluations.record_finished

    def new_stop():
        stops.append(make_stop())
        return stops[-1]

    def recording_start(self, model, step):
        start(self, model, step)
        started.append(step)

    def signalled_record_finished(self, wait=False):
        if started == [7] and stops[-1].signal is None:
            stops[-1].signal = signal.SIGINT
        return record_finished(self, wait)
    monkeypatch.setattr(signals, "StopRequest", new_stop)
    monkeypatch.setattr(monitor.Evaluations, "start", recording_start)
    monkeypatch.setattr(monitor.Evaluations, "record_finished", signalled_record_finished)
    in_place, _ = train_small_run(monkeypatch, False, {"eval_every": 7})
    started.clear()
    background, _ = train_small_run(monkeypatch, True, {"eval_every": 7})
    assert [e["step"] for e in in_place["evaluations"]] == [7]
    assert background == in_place


def test_an_evaluation_in_the_background_that_finds_broken_weights_stops_the_run():
    """evaluate_sets raises Diverged for weights that are not finite numbers; made in the
    background, it is raised in the training thread when the evaluation is collected."""
    import nn
    from app.progress import Progress
    model = MLP([784, 5, 10], rng=np.random.default_rng(0))
    images, labels = np.zeros((3, 784), np.uint8), np.zeros(3, np.int64)
    evaluations = monitor.Evaluations({"test": (images, labels)}, [], Progress(10, 10, quiet=True), True)
    model.layers[0].W[0, 0] = np.nan
    evaluations.start(model, 7)
    with pytest.raises(monitor.Diverged, match="stopped being finite numbers by step 7"):
        evaluations.record_finished(wait=True)
    evaluations.close()


def test_nn_py_opens_with_the_original_settings_and_the_training_loop():
    """A reader meets the algorithm first: the settings that the flags default to (app/cli.py)
    on the first screen, train() within the first 150 lines, its loop one screen."""
    import ast

    import nn
    d = cli.DEFAULTS
    settings = nn.__doc__.split("Read the algorithm")[0]
    assert f"784 inputs -> {' -> '.join(f'{n} ReLU' for n in d['hidden'])} -> 10 softmax" in settings
    assert (d["activation"], d["optimizer"]) == ("relu", "sgd") and f"plain SGD, learning rate {d['lr']}" in settings
    assert f"batch       {d['batch_size']} images" in settings and f"seed        {d['seed']}" in settings
    assert f"steps       {d['steps']:,}" in settings
    source = (PROJECT_DIR / "nn.py").read_text()
    train = next(node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef) and node.name == "train")
    loop = next(node for node in train.body if isinstance(node, ast.For))
    assert train.lineno <= 150 and loop.end_lineno - loop.lineno + 1 <= 15 and len(source.splitlines()) <= 300


@pytest.mark.parametrize("argv, meant", [
    (["--setps", "10"], "--setps 10; did you mean --steps?"),
    (["--Steps", "10"], "--Steps 10; did you mean --steps?"),  # flags are lower case
    (["--optimiser=adam"], "--optimiser=adam; did you mean --optimizer?"),
    (["--bogus"], "--bogus"),  # close to no flag: no guess ("--out" would be one at difflib's own cutoff)
    (["--validation", "0.1"], "--validation 0.1"),  # no "--activation": a flag meant starts alike
    (["--", "--steps", "10"], "-- --steps 10"),  # after "--" no word is a flag, and --steps is one
])
def test_a_misspelt_flag_gets_the_flag_probably_meant(argv, meant):
    result = run_nn(*argv)
    assert result.returncode == 2
    assert result.stderr == f"nn.py: error: unrecognized arguments: {meant} (see python nn.py --help)\n"


def test_predict_and_serve_name_their_own_flag_probably_meant():
    from app import predict
    from app.page import server
    for parser, word, meant in ((predict.build_parser(), "--modle", "--model"), (server.build_parser(), "--prot", "--port")):
        assert parser.flag_meant([word, "3"]) == f"; did you mean {meant}?"
        assert parser.flag_meant(["3", "--zzz"]) == ""

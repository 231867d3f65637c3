"""Training in the server (training_session.py): one run at a time, stop, save or discard,
the model file replaced only when a run ends, and Ctrl-C mid-run.

Each server runs in a subprocess on its own copy of a random-weight model, with the
project's datasets/ (the runs are nn.py's default configuration, cut short by "steps").
"""

import errno
import json
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from app.page import explore
from app import cli, model_file, monitor, save, signals
import nn
from app.page import server as serve
from app.words import count
from conftest import PROJECT_DIR, start_server
from mlp import MLP
from test_serve import as_json, ask, drawing
from app.page.training_session import PageProgress, TrainingSession


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "model_mnist.npz"
    model_file.save(MLP([784, 150, 150, 10], rng=np.random.default_rng(0)), path, steps_done=7)
    return path


def address_of(url):
    host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
    return host, int(port)


@pytest.fixture
def served(model_path):
    """(server address, model path) of a fresh server; stopped after the test."""
    process, url = start_server(model_path)
    yield address_of(url), model_path
    process.terminate()
    process.wait(timeout=30)


def post(server, path, value):
    return ask(server, "POST", path, json.dumps(value))


def wait_for(server, statuses, timeout=120):
    """The state of the run once its status is one of `statuses`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, state, _ = ask(server, "GET", "/api/train")
        if state["status"] in statuses:
            return state
        time.sleep(0.1)
    raise AssertionError(f"status still {state['status']!r} after {timeout} s: {state['message']}")


def test_a_completed_run_asks_as_a_stopped_one_then_replaces_the_model_file_and_keeps_the_old_one(served):
    """A page run that completed replaced the model without asking, while Stop asked: the
    98.12 % model was replaced by a 300-step one. Now both wait for Save or Discard."""
    server, model_path = served
    old_bytes = model_path.read_bytes()
    status, state, _ = post(server, "/api/train", {"steps": 300, "seed": 3})
    assert status == 200 and state["status"] in ("loading", "running")
    state = wait_for(server, {"stopped", "saved", "failed"})
    assert state["status"] == "stopped", state["message"]
    assert state["message"] == "Completed all 300 steps. Save it over model_mnist.npz, or discard it?"
    assert model_path.read_bytes() == old_bytes  # nothing written before the answer
    status, state, _ = post(server, "/api/train/save", {"save": True})
    assert status == 200 and state["status"] == "saved", state["message"]
    assert state["step"] == 300 and len(state["curve"]["loss"]) == 300  # one point a step below 400 steps
    assert state["evaluations"][-1]["step"] == 300  # the last step is evaluated, as in nn.train
    assert len(state["weights"]) == 36 and all(len(unit) == 784 for unit in state["weights"])
    model, info = model_file.load(model_path, with_info=True)
    assert info["steps_done"] == 300 and info["config"]["seed"] == 3
    kept = [path for path in (model_path.parent / "runs").glob("*/model_mnist.npz") if path.read_bytes() == old_bytes]
    assert kept, "the replaced model was not kept under runs/"
    _, facts, _ = ask(server, "GET", "/api/model")
    stats = json.loads((model_path.parent / "stats.json").read_text())
    assert facts["steps_done"] == 300 and facts["test_accuracy"] == stats["test_accuracy"]
    assert not list(model_path.parent.glob(".*.tmp"))
    for name in save.OUTPUT_FILES:  # save.save_run's outputs, pictures included, beside the model and in the run's copy
        assert (model_path.parent / name).is_file() and (model_path.parent / stats["run_folder"] / name).is_file()


def test_one_run_at_a_time_and_a_stopped_run_asks_first(served):
    server, model_path = served
    old_bytes = model_path.read_bytes()
    post(server, "/api/train", {"steps": 100000})
    wait_for(server, {"running"})
    status, answer, _ = post(server, "/api/train", {})
    assert status == 409 and answer == {"error": "a training run is already going: stop it first"}
    status, answer, _ = post(server, "/api/damage", {"zero_biases": True})
    assert status == 409 and "training run" in answer["error"]
    _, reading_during, _ = post(server, "/api/predict", json.loads(as_json(drawing())))
    assert reading_during["digit"] is not None  # the drawing is read with the newest weights
    _, damage_during, _ = ask(server, "GET", "/api/damage")
    assert damage_during["damaged"] is False and damage_during["training_weights"] is True
    assert type(damage_during["weights_step"]) is int  # the page names the step of the weights it measured
    status, state, _ = ask(server, "POST", "/api/train/stop", b"")
    assert status == 200
    state = wait_for(server, {"stopped"})
    assert "Save it over model_mnist.npz, or discard it?" in state["message"]
    assert model_path.read_bytes() == old_bytes  # nothing written before the answer
    status, answer, _ = post(server, "/api/train", {})
    assert status == 409 and answer["error"] == "the stopped run waits: save or discard it first"
    status, state, _ = post(server, "/api/train/save", {"save": False})
    assert status == 200 and state["status"] == "discarded"
    assert model_path.read_bytes() == old_bytes
    status, answer, _ = post(server, "/api/train/save", {"save": True})
    assert status == 409 and answer["error"] == "no stopped run waits to be saved"
    post(server, "/api/train", {"steps": 100000})
    wait_for(server, {"running"})
    post(server, "/api/train/stop", {})
    stopped = wait_for(server, {"stopped"})
    status, state, _ = post(server, "/api/train/save", {"save": True})
    assert status == 200 and state["status"] == "saved"
    assert model_file.load(model_path, with_info=True)[1]["steps_done"] == stopped["step"]


BAD_TRAINING = [
    ("steps 0", "/api/train", {"steps": 0}, 400, "steps"),
    ("steps above the limit", "/api/train", {"steps": 100001}, 400, "steps"),
    ("steps 1.5", "/api/train", {"steps": 1.5}, 400, "steps"),
    ("a seed as text", "/api/train", {"seed": "1"}, 400, "seed"),
    ("an unknown option", "/api/train", {"lr": 1}, 400, "body"),
    ("save as text", "/api/train/save", {"save": "yes"}, 400, "body"),
    ("save with no run", "/api/train/save", {"save": True}, 409, "no stopped run"),
    ("stop with no run", "/api/train/stop", {}, 409, "no training run is going"),
]


@pytest.mark.parametrize("path, value, status, reason", [case[1:] for case in BAD_TRAINING],
                         ids=[case[0] for case in BAD_TRAINING])
def test_bad_training_requests_get_one_line(served, path, value, status, reason):
    server, _ = served
    answer_status, answer, _ = post(server, path, value)
    assert answer_status == status
    assert set(answer) == {"error"} and "\n" not in answer["error"] and answer["error"].startswith(reason)
    _, state, _ = ask(server, "GET", "/api/train")
    assert state["status"] == "idle"  # nothing started


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_mid_run_leaves_the_model_file_whole_and_unchanged(model_path, how):
    old_bytes = model_path.read_bytes()
    process, url = start_server(model_path, "--train")
    server = address_of(url)
    wait_for(server, {"running"})
    time.sleep(0.5)
    process.send_signal(how)
    output, errors = process.communicate(timeout=60)
    assert process.returncode == signals.EXIT_INTERRUPTED[how] and errors == ""  # 130, 143: a run was dropped
    lines = output.splitlines()
    assert lines[-1] == "Stopped."  # the server's last line, after what became of the run
    assert lines[-2].startswith("The training run stopped at step ") and lines[-2].endswith(
        f"was not saved; {model_path} is unchanged.")
    assert model_path.read_bytes() == old_bytes
    assert sorted(path.name for path in model_path.parent.iterdir()) == ["model_mnist.npz"]  # no stray file


def test_ctrl_c_mid_run_from_a_fresh_clone_says_the_model_was_not_written(tmp_path):
    model_path = tmp_path / "model_mnist.npz"
    process, url = start_server(model_path, "--train")
    wait_for(address_of(url), {"running"})
    process.send_signal(signal.SIGINT)
    output, errors = process.communicate(timeout=60)
    assert process.returncode == 130 and errors == ""
    assert output.splitlines()[-2:] == [output.splitlines()[-2], "Stopped."]
    assert output.splitlines()[-2].endswith(f"was not saved; {model_path} was not written.")
    assert not model_path.exists()


def test_the_console_says_one_line_when_a_run_is_saved_and_when_one_is_discarded(model_path):
    process, url = start_server(model_path)
    server = address_of(url)
    post(server, "/api/train", {"steps": 50})
    wait_for(server, {"stopped"})  # completed: it waits for Save or Discard
    _, saved, _ = post(server, "/api/train/save", {"save": True})
    post(server, "/api/train", {"steps": 100000})
    wait_for(server, {"running"})
    post(server, "/api/train/stop", {})
    wait_for(server, {"stopped"})
    _, discarded, _ = post(server, "/api/train/save", {"save": False})
    process.send_signal(signal.SIGINT)
    output, errors = process.communicate(timeout=60)
    assert process.returncode == 0 and errors == ""
    lines = output.splitlines()  # after the startup lines, which start_server read
    assert lines == [saved["message"], discarded["message"], "Stopped."]
    assert saved["message"].startswith("Saved model_mnist.npz: 50 steps, test accuracy ")
    assert discarded["message"].startswith("Discarded the run stopped at step ")


def test_page_progress_keeps_each_loss_and_sends_block_means():
    progress = PageProgress(model=None, total_steps=1000, publish=lambda model: None)
    for step in range(1, 801):
        progress.step(step, float(step))
    curve = progress.curve(points=100)  # blocks of 10 steps
    assert curve["window"] == 10 and curve["step"][:2] == [10, 20] and len(curve["loss"]) == 80
    assert curve["loss"][0] == pytest.approx(5.5) and curve["loss"][-1] == pytest.approx(795.5)


def test_the_config_is_nn_defaults_with_the_pages_steps_and_seed():
    config = TrainingSession.checked_config({"steps": 500, "seed": 2})
    assert config == dict(cli.DEFAULTS, steps=500, seed=2)
    assert TrainingSession.checked_config({}) == cli.DEFAULTS


def test_serve_train_flag_is_in_the_help():
    import subprocess
    import sys
    from conftest import PROJECT_DIR
    result = subprocess.run([sys.executable, str(PROJECT_DIR / "nn.py"), "serve", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert "--train" in result.stdout and "--data" in result.stdout


def test_the_speed_benchmark_runs_with_tiny_sizes():
    import subprocess
    import sys
    from conftest import PROJECT_DIR
    result = subprocess.run([sys.executable, str(PROJECT_DIR / "benchmarks" / "serve_training.py"), "--steps", "50",
                             "--rounds", "1"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "serve / nn.py = " in result.stdout and "round 1: nn.py " in result.stdout


def test_serve_train_from_a_fresh_clone_needs_no_model_file(tmp_path):
    model_path = tmp_path / "model_mnist.npz"
    process, url = start_server(model_path, "--train")
    server = address_of(url)
    try:
        assert "untrained weights" in process.stdout.readline()
        _, facts, _ = ask(server, "GET", "/api/model")
        assert facts["steps_done"] == 0 and facts["layer_sizes"] == [784, 150, 150, 10]
        wait_for(server, {"running"})
        post(server, "/api/train/stop", {})
        stopped = wait_for(server, {"stopped"})
        post(server, "/api/train/save", {"save": True})
        assert model_file.load(model_path, with_info=True)[1]["steps_done"] == stopped["step"]
        _, facts, _ = ask(server, "GET", "/api/model")
        assert facts["steps_done"] == stopped["step"] and facts["test_accuracy"] is not None
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_missing_model_without_train_is_still_one_line_and_exit_1(tmp_path):
    import subprocess
    import sys
    from conftest import PROJECT_DIR
    result = subprocess.run([sys.executable, str(PROJECT_DIR / "nn.py"), "serve", "--model", str(tmp_path / "no.npz"),
                             "--port", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "no such model file" in result.stderr


# ------------------------------------------------------------------ saving: signals, failures, folders

SLOW_SAVE = PROJECT_DIR / "tests" / "slow_save_nn.py"


def wait_until(condition, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{condition} still false after {timeout} s"
        time.sleep(0.05)


def post_quietly(server, path, value):
    """post, for a thread whose server may end before it answers (a refused or reset
    connection, or an answer cut short: http.client.IncompleteRead)."""
    import http.client
    try:
        post(server, path, value)
    except (OSError, http.client.HTTPException):
        pass


def test_ctrl_c_while_the_page_saves_a_stopped_run_lets_the_save_finish_and_says_so(model_path, tmp_path):
    marker = tmp_path.parent / f"{tmp_path.name}.saving"  # created when stats.json, the last output, is due
    process, url = start_server(model_path, program=(SLOW_SAVE, marker))
    server = address_of(url)
    post(server, "/api/train", {"steps": 100000})
    wait_for(server, {"running"})
    post(server, "/api/train/stop", {})
    stopped = wait_for(server, {"stopped"})
    threading.Thread(target=post_quietly, args=(server, "/api/train/save", {"save": True}), daemon=True).start()
    wait_until(marker.exists)
    process.send_signal(signal.SIGINT)
    output, errors = process.communicate(timeout=120)
    assert process.returncode == 0 and errors == ""
    # the step it stopped at may be the first on a busy machine: "1 step"
    assert "Saving the training run" in output and f"Saved model_mnist.npz: {count(stopped['step'], 'step')}," in output
    assert "was not saved" not in output
    stats = json.loads((model_path.parent / "stats.json").read_text())
    assert stats["steps"] == stopped["step"] == model_file.load(model_path, with_info=True)[1]["steps_done"]
    copied = {path.name for path in (model_path.parent / stats["run_folder"]).iterdir()}
    beside = {path.name for path in model_path.parent.iterdir() if path.name in save.OUTPUT_FILES}
    assert copied == beside >= set(save.OUTPUT_FILES) - {"accuracy_graph.png"}  # none without evaluations


def test_a_second_ctrl_c_during_a_save_quits_at_once_saying_what_was_written(model_path, tmp_path):
    old_bytes = model_path.read_bytes()
    marker = tmp_path.parent / f"{tmp_path.name}.saving"
    process, url = start_server(model_path, program=(SLOW_SAVE, marker))
    post(address_of(url), "/api/train", {"steps": 50})  # it completes, and waits for Save
    wait_for(address_of(url), {"stopped"})
    threading.Thread(target=post_quietly, args=(address_of(url), "/api/train/save", {"save": True}),
                     daemon=True).start()
    wait_until(marker.exists)
    process.send_signal(signal.SIGINT)
    lines = []
    while not lines or (lines[-1] and "Saving the training run" not in lines[-1]):
        lines.append(process.stdout.readline())
    process.send_signal(signal.SIGINT)
    output, errors = process.communicate(timeout=60)
    assert lines[-1] == "Saving the training run; Ctrl-C again quits at once\n", lines
    assert process.returncode == 130 and "Traceback" not in errors and errors.count("\n") == 1, errors
    assert errors.startswith(f"nn.py serve: quit during the save: wrote model_mnist.npz, training_loss_graph.png")
    assert f"to {model_path.parent}; not written: stats.json (" in errors
    assert model_file.load(model_path, with_info=True)[1]["steps_done"] == 50  # whole: the new model
    kept = [path for path in (model_path.parent / "runs").glob("*/model_mnist.npz") if path.read_bytes() == old_bytes]
    assert kept and not (model_path.parent / "stats.json").exists()


@pytest.fixture
def in_process(model_path):
    """A serve.Server in this process (not listening to requests), for tests that patch nn."""
    server = serve.Server(("127.0.0.1", 0), serve.load_served_model(model_path), model_path=model_path,
                          data_dir=PROJECT_DIR / "datasets", train=nn.train)
    yield server
    server.training.stop_button.press()
    if server.training.thread is not None:
        server.training.thread.join(60)
    server.server_close()


def test_a_failed_save_keeps_the_run_so_that_save_can_be_tried_again(in_process, model_path, monkeypatch):
    session, stats_path = in_process.training, model_path.parent / "stats.json"
    write_stats = save.write_stats
    failures = [OSError(errno.ENOSPC, "No space left on device", str(stats_path))]

    def full_disk_once(paths, stats, stop):
        if failures:
            raise failures.pop()
        write_stats(paths, stats, stop)

    monkeypatch.setattr(save, "write_stats", full_disk_once)
    session.start({"steps": 50}, save_when_complete=True)
    wait_until(lambda: session.status not in ("loading", "running"))
    assert session.status == "stopped", session.message  # the run waits: Save again, or discard
    assert session.message.startswith(f"Cannot save: {stats_path}: No space left on device; "
                                      f"wrote model_mnist.npz, ")
    assert "not written: stats.json (" in session.message and session.message.endswith("Save again, or discard the run?")
    state = session.decide({"save": True})
    assert state["status"] == "saved", state["message"]
    assert json.loads(stats_path.read_text())["steps"] == 50 == model_file.load(model_path, with_info=True)[1]["steps_done"]
    assert in_process.served.facts["steps_done"] == 50 and in_process.served.facts["test_accuracy"] is not None


def fail_write_stats_once(monkeypatch, error):
    """Make the next save.write_stats (stats.json, the save's last output) raise `error`."""
    write_stats, failures = save.write_stats, [error]

    def failing_once(paths, stats, stop):
        if failures:
            raise failures.pop()
        write_stats(paths, stats, stop)

    monkeypatch.setattr(save, "write_stats", failing_once)


def test_a_save_out_of_memory_keeps_the_run_for_a_retry_too(in_process, model_path, monkeypatch, capsys):
    """Not only an OSError: a MemoryError while writing leaves the run waiting, with one
    line on the page and the console, and no empty run folder."""
    session = in_process.training
    fail_write_stats_once(monkeypatch, MemoryError())
    session.start({"steps": 50}, save_when_complete=True)
    wait_until(lambda: session.status not in ("loading", "running"))
    assert session.status == "stopped", session.message  # it said "failed", and the run was gone
    assert session.message.startswith("Cannot save: out of memory; wrote model_mnist.npz, ")
    assert "\n" not in session.message and session.message.endswith("Save again, or discard the run?")
    assert capsys.readouterr().out == session.message + "\n"  # the console's one line
    assert all(any(folder.iterdir()) for folder in (model_path.parent / "runs").iterdir())  # none left empty
    state = session.decide({"save": True})
    assert state["status"] == "saved", state["message"]
    assert json.loads((model_path.parent / "stats.json").read_text())["steps"] == 50


def test_a_save_interrupted_by_keyboardinterrupt_is_not_taken_for_a_failure(in_process, monkeypatch):
    session = in_process.training
    session.start({"steps": 100000})
    wait_until(lambda: session.status == "running")
    session.stop()
    wait_until(lambda: session.status == "stopped")
    fail_write_stats_once(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        session.decide({"save": True})
    assert session.saving is None


def test_save_again_keeps_only_the_model_genuinely_replaced(in_process, model_path, monkeypatch):
    """The failed save replaced model_mnist.npz with the run's model before failing at
    stats.json; Save again must not copy that half-saved model under runs/ as "replaced"."""
    old_bytes = model_path.read_bytes()
    fail_write_stats_once(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    session = in_process.training
    session.start({"steps": 50}, save_when_complete=True)
    wait_until(lambda: session.status not in ("loading", "running"))
    assert session.status == "stopped" and model_file.load(model_path, with_info=True)[1]["steps_done"] == 50
    assert session.decide({"save": True})["status"] == "saved"
    stats = json.loads((model_path.parent / "stats.json").read_text())
    copies = sorted((model_path.parent / "runs").glob("*/model_mnist.npz"))
    kept = [copy for copy in copies if copy.read_bytes() == old_bytes]
    assert len(kept) == 1  # the model replaced, once
    assert set(copies) - set(kept) == {model_path.parent / stats["run_folder"] / "model_mnist.npz"}, copies


def test_a_one_step_run_is_saved_as_1_step(in_process):
    session = in_process.training
    session.start({"steps": 1}, save_when_complete=True)
    wait_until(lambda: session.status not in ("loading", "running"))
    assert session.message.startswith("Saved model_mnist.npz: 1 step, test accuracy "), session.message  # "1 steps"


def test_a_failed_save_whose_model_cannot_be_read_back_still_waits_for_save_again(in_process, model_path,
                                                                                  monkeypatch):
    """Memory runs out twice: in the save (after model_mnist.npz), then reading the file back.
    The request answered 500 ("internal error"), the page kept "Stopped at step ...", and Save
    again copied the failed save's model under runs/ as if it were the one replaced."""
    old_bytes = model_path.read_bytes()
    fail_write_stats_once(monkeypatch, MemoryError())
    session = in_process.training
    reload, failures = session.reload, [MemoryError()]

    def reload_failing_once(path):
        if failures:
            raise failures.pop()
        return reload(path)

    monkeypatch.setattr(session, "reload", reload_failing_once)
    session.start({"steps": 100000})
    wait_until(lambda: session.status == "running")
    session.stop()
    wait_until(lambda: session.status == "stopped")
    state = session.decide({"save": True})
    assert state["status"] == "stopped" and state["message"].startswith("Cannot save: out of memory; wrote ")
    assert "model_mnist.npz could not be read back (out of memory); the server reads it again" in state["message"]
    assert session.decide({"save": True})["status"] == "saved"
    stats = json.loads((model_path.parent / "stats.json").read_text())
    copies = sorted((model_path.parent / "runs").glob("*/model_mnist.npz"))
    assert [copy.read_bytes() == old_bytes for copy in copies].count(True) == 1  # the model replaced, once
    assert set(copy for copy in copies if copy.read_bytes() != old_bytes) == {
        model_path.parent / stats["run_folder"] / "model_mnist.npz"}, copies  # and the run's own copy, no other


def test_a_save_that_failed_after_writing_the_model_is_told_as_it_is(in_process, model_path, monkeypatch):
    """The save wrote model_mnist.npz, then failed at stats.json: the server reads with the
    file's new model at once, and does not 'reload' it again at the next request; Ctrl-C
    and Discard then say what that save wrote, not that the file is unchanged."""
    session, stats_path = in_process.training, model_path.parent / "stats.json"

    def full_disk(paths, stats, stop):
        raise OSError(errno.ENOSPC, "No space left on device", str(stats_path))

    monkeypatch.setattr(save, "write_stats", full_disk)
    session.start({"steps": 50}, save_when_complete=True)
    wait_until(lambda: session.status not in ("loading", "running"))
    assert session.status == "stopped" and model_file.load(model_path, with_info=True)[1]["steps_done"] == 50
    assert in_process.served.number == 2  # read once, by the save itself
    in_process.reload_if_replaced()  # what every request does first: nothing new to read
    assert in_process.served.number == 2 and in_process.served.facts["steps_done"] == 50
    line = session.shutdown(say=lambda text: None)
    assert line.startswith("The training run that ended at step 50 could not be saved: cannot save: "), line
    assert "wrote model_mnist.npz, " in line and "is unchanged" not in line
    assert "the training run was not saved" not in session.quit_message()
    state = session.decide({"save": False})
    assert state["status"] == "discarded" and "the files are as its failed save left them" in state["message"]


def test_the_server_reads_the_file_its_run_saved_once(in_process, monkeypatch):
    write_stats = save.write_stats

    def slow_write_stats(paths, stats, stop):  # the page's requests land while the save is under way
        time.sleep(0.7)
        write_stats(paths, stats, stop)

    monkeypatch.setattr(save, "write_stats", slow_write_stats)
    session = in_process.training
    session.start({"steps": 50}, save_when_complete=True)
    while session.status in ("loading", "running"):
        in_process.reload_if_replaced()  # what every request does first
        time.sleep(0.05)
    assert session.status == "saved", session.message
    assert in_process.served.number == 2 and in_process.served.facts["test_accuracy"] is not None


def test_a_run_that_could_not_be_saved_is_refused_before_it_starts(in_process, model_path):
    (model_path.parent / "runs").write_text("in the way\n")
    with pytest.raises(explore.Unavailable, match=r"^cannot train here: .*runs: not a folder; every run copies"):
        in_process.training.start({"steps": 50})
    assert in_process.training.status == "idle" and in_process.training.thread is None


def test_training_needs_the_served_file_to_be_named_model_mnist_npz(tmp_path):
    other = tmp_path / "experiment.npz"
    model_file.save(MLP([784, 150, 150, 10], rng=np.random.default_rng(0)), other, steps_done=7)
    result = subprocess.run([sys.executable, str(PROJECT_DIR / "nn.py"), "serve", "--model", str(other), "--port", "0",
                             "--train"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and result.stdout == ""
    assert "--train saves model_mnist.npz" in result.stderr and "experiment.npz" in result.stderr
    process, url = start_server(other)  # the page's Train button: 503, one line
    try:
        status, answer, _ = post(address_of(url), "/api/train", {"steps": 50})
        assert status == 503 and answer["error"].startswith("training saves model_mnist.npz")
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["experiment.npz"]


def test_serve_train_with_a_broken_model_file_does_not_advise_training_one_first(tmp_path):
    broken = tmp_path / "model_mnist.npz"
    broken.write_bytes(b"not a model")
    result = subprocess.run([sys.executable, str(PROJECT_DIR / "nn.py"), "serve", "--model", str(broken), "--port", "0",
                             "--train"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "train one first" not in result.stderr and "--train writes a new one" in result.stderr
    assert broken.read_bytes() == b"not a model"


def test_a_huge_step_count_is_echoed_short():
    with pytest.raises(explore.BadValue) as refused:
        TrainingSession.checked_config({"steps": 10 ** 400})
    assert str(refused.value).startswith("steps: expected a whole number") and len(str(refused.value)) < 120


def test_serve_train_into_a_folder_that_cannot_take_the_outputs_is_refused_at_start(model_path):
    (model_path.parent / "runs").write_text("in the way\n")
    result = subprocess.run([sys.executable, str(PROJECT_DIR / "nn.py"), "serve", "--model", str(model_path), "--port",
                             "0", "--train"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == "" and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"nn.py serve: error: cannot train here: {model_path.parent / 'runs'}: not a folder")


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",  # the run's save (monitor.evaluate) reads
                            "ignore:invalid value encountered:RuntimeWarning")  # the test set with it: not the server
def test_a_page_trained_model_whose_sums_overflow_gets_503_not_nan(in_process, monkeypatch):
    """A Train run whose weights end so large that float32 sums overflow (here: scaled by 1e30
    once trained): the drawing is read with them, and /api/predict answered 200 with NaN in its
    JSON, which the page cannot parse. Now: one line with 503, and the server goes on serving."""
    train = nn.train

    def overflowing_train(model, *args, **kwargs):
        history = train(model, *args, **kwargs)
        for layer in model.layers:
            layer.W[...] = np.abs(layer.W) * np.float32(1e30)
        return history

    session = in_process.training
    monkeypatch.setattr(session, "train", overflowing_train)
    session.start({"steps": 1}, save_when_complete=True)
    wait_until(lambda: session.status not in ("loading", "running"))
    threading.Thread(target=in_process.serve_forever, daemon=True).start()
    try:
        address = in_process.server_address[:2]
        status, answer, _ = ask(address, "POST", "/api/predict", as_json(drawing()))
        assert status == 503 and answer == {"error": "the model in use: its outputs are not numbers "
                                                     "(weights so large that its sums overflow)"}, (status, answer)
        assert ask(address, "GET", "/api/train")[0] == 200 and ask(address, "GET", "/api/model")[0] == 200
    finally:
        in_process.shutdown()

"""picture_workers.py: the pictures drawn in worker processes are the pictures this process
would draw, and a worker that fails, dies or is stopped costs no picture and leaves no
half-written file."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from app import picture_workers
from app.picture_workers import PictureWorkers
from conftest import PROJECT_DIR

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="the tests stop workers with POSIX signals")


def pictures(folder, mistakes=3):
    """The five pictures of a small made-up run, as PictureWorkers.draw takes them."""
    rng = np.random.default_rng(0)
    steps = list(range(1, 301))
    losses = list(2.3 * np.exp(-np.arange(300) / 80) + 0.05 * rng.random(300))
    evaluations = [{"step": s, "test_loss": 0.5 / s ** 0.5, "test_accuracy": 0.9 + s / 4000} for s in (100, 200, 300)]
    confusion = (np.eye(10, dtype=np.int64) * 980 + rng.integers(0, 5, (10, 10))).tolist()
    images = rng.integers(0, 256, (mistakes, 784), dtype=np.uint8)
    labels, predicted = rng.integers(0, 10, mistakes), rng.integers(0, 10, mistakes)
    W, next_W = rng.standard_normal((784, 150)).astype(np.float32), rng.standard_normal((150, 150)).astype(np.float32)
    return [("loss_graph", (folder / "loss.png", steps, losses, evaluations), {"title": "Training loss"}),
            ("accuracy_graph", (folder / "accuracy.png", evaluations), {}),
            ("confusion_matrix_plot", (folder / "confusion.png", confusion), {}),
            ("misclassified_grid", (folder / "misclassified.png", images, labels, predicted,
                                    rng.random(mistakes)), {}),
            ("first_layer_weights", (folder / "weights.png", W), {"next_layer_W": next_W})]


def is_png(path):
    content = path.read_bytes()
    return content.startswith(b"\x89PNG") and content.endswith(b"IEND\xaeB`\x82")


def wait_until(condition, seconds=60):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "waited in vain"
        time.sleep(0.02)


def ready(workers):
    """`workers` (a PictureWorkers), once each has said it is ready (it has loaded Matplotlib)."""
    wait_until(lambda: len(workers.ready) == len(workers.workers))
    return workers


def drawn_here(monkeypatch):
    """A list that collects the names of the pictures this process draws itself."""
    names = []
    draw_here = picture_workers.draw_here
    monkeypatch.setattr(picture_workers, "draw_here", lambda picture: (names.append(picture[0]), draw_here(picture)))
    return names


def test_workers_draw_the_very_pictures_this_process_draws(tmp_path, monkeypatch):
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir(), there.mkdir()
    PictureWorkers(0).draw(pictures(here))
    names = drawn_here(monkeypatch)
    with ready(PictureWorkers(2)) as workers:
        workers.draw(pictures(there))
        assert names == [] and all(worker.poll() is None for worker in workers.workers)
    for path in here.iterdir():
        assert (there / path.name).read_bytes() == path.read_bytes(), path.name  # byte for byte
    assert len(list(there.iterdir())) == 5 and all(is_png(path) for path in there.iterdir())


def test_a_picture_no_worker_could_write_is_drawn_here_and_raises_its_error(tmp_path, monkeypatch):
    """A worker that fails answers False: the run draws that picture itself, so the error is
    the one it would have had without workers (here: a folder that does not exist)."""
    names = drawn_here(monkeypatch)
    wanted = pictures(tmp_path)
    wanted[2] = ("confusion_matrix_plot", (tmp_path / "gone" / "confusion.png", *wanted[2][1][1:]), {})
    with ready(PictureWorkers(2)) as workers, pytest.raises(FileNotFoundError) as error:
        workers.draw(wanted)
    assert error.value.filename == str(tmp_path / "gone" / "confusion.png") and names == ["confusion_matrix_plot"]
    assert sorted(path.name for path in tmp_path.glob("*.png")) == [
        "accuracy.png", "loss.png", "misclassified.png", "weights.png"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_picture_that_cannot_be_sent_to_a_worker_is_drawn_here(tmp_path, monkeypatch):
    names = drawn_here(monkeypatch)
    wanted = pictures(tmp_path)
    unpicklable_title = type("Title", (str,), {"__reduce__": lambda self: 1 / 0})("Training loss")
    wanted[0][2]["title"] = unpicklable_title
    with ready(PictureWorkers(2)) as workers:
        workers.draw(wanted)
        assert all(worker.poll() is None for worker in workers.workers)  # the workers are fine
    assert names == ["loss_graph"] and len(list(tmp_path.glob("*.png"))) == 5


@pytest.mark.parametrize("how", ["killed", "never started"])
def test_the_pictures_of_a_worker_that_died_are_drawn_here(tmp_path, monkeypatch, how):
    names = drawn_here(monkeypatch)
    if how == "never started":
        monkeypatch.setattr(picture_workers.subprocess, "Popen", lambda *args, **kwargs: (_ for _ in ()).throw(
            OSError(11, "Resource temporarily unavailable")))
    with ready(PictureWorkers(2)) as workers:
        if how == "killed":
            for worker in workers.workers:
                worker.kill()
                worker.wait()
        workers.draw(pictures(tmp_path))
    assert names == ["loss_graph", "accuracy_graph", "confusion_matrix_plot", "misclassified_grid",
                     "first_layer_weights"]
    assert len(list(tmp_path.glob("*.png"))) == 5 and all(is_png(path) for path in tmp_path.glob("*.png"))


def test_a_worker_whose_listener_cannot_be_started_is_stopped_and_the_run_draws(tmp_path, monkeypatch):
    """Near the limit on processes, which counts threads too, a worker can start where the
    thread that waits for its "ready" cannot: PictureWorkers raised RuntimeError ("can't
    start new thread") and left that worker running. Now it stops it, as it gives up a
    worker that cannot be started, and the run draws."""
    names = drawn_here(monkeypatch)

    def no_thread(thread):
        raise RuntimeError("can't start new thread")

    started = []  # the workers started, whether or not PictureWorkers keeps them
    popen = picture_workers.subprocess.Popen

    def popen_and_note(*args, **kwargs):
        started.append(popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(picture_workers.subprocess, "Popen", popen_and_note)
    monkeypatch.setattr(picture_workers.threading.Thread, "start", no_thread)
    with PictureWorkers(2) as workers:
        assert workers.workers == [] and picture_workers._running == set()
        workers.draw(pictures(tmp_path))
    assert len(started) == 1 and started[0].poll() is not None  # the one started, stopped
    assert len(names) == 5 and len(list(tmp_path.glob("*.png"))) == 5


def test_the_pictures_of_a_dead_worker_go_to_the_live_one(tmp_path, monkeypatch):
    """A dead worker fails at once (a broken pipe): its thread took picture after picture and
    gave them all to the run, the live worker drawing none (6 of 6 drawn here). Now it gives
    up the first only, and the live worker draws the rest."""
    names = drawn_here(monkeypatch)
    with ready(PictureWorkers(2)) as workers:
        dead, live = workers.workers
        dead.kill()
        dead.wait()
        workers.draw(pictures(tmp_path))
        assert live.poll() is None
    assert len(names) == 1 and len(list(tmp_path.glob("*.png"))) == 5


def test_workers_still_loading_matplotlib_are_not_waited_for(tmp_path, monkeypatch):
    """A run saved before its workers are ready (a short run; a busy machine, where their
    low-priority loading may take seconds) draws its pictures itself: a --dry-run beside one
    busy program took 9.95 s waiting for them, against 5.35 s without workers."""
    names = drawn_here(monkeypatch)
    with PictureWorkers(2) as workers:
        workers.draw(pictures(tmp_path))  # at once: no worker has loaded Matplotlib yet
        assert workers.ready == set()
        started = list(workers.workers)
    assert len(names) == 5 and all(worker.poll() is not None for worker in started)  # stopped at close


def test_a_worker_ignores_ctrl_c_which_is_the_run_s_to_answer(tmp_path):
    """Ctrl-C reaches every process of the terminal: the worker goes on (the run, told
    to stop, saves, and the worker draws its pictures)."""
    with ready(PictureWorkers(1)) as workers:
        worker = workers.workers[0]
        worker.send_signal(signal.SIGINT)
        time.sleep(0.2)
        assert worker.poll() is None and picture_workers.ask(worker, pictures(tmp_path)[2])
    assert worker.returncode == 0 and is_png(tmp_path / "confusion.png")


def test_close_stops_the_workers_whether_or_not_they_drew():
    idle, busy = PictureWorkers(2), PictureWorkers(1)
    idle.close()  # at once, while they import Matplotlib (a run that failed before its save)
    assert idle.workers == []
    worker = busy.workers[0]
    busy.close()
    assert worker.poll() is not None


def test_stop_all_leaves_each_picture_old_or_new_and_no_temporary_file(tmp_path):
    """A second Ctrl-C while a worker draws: stop_all ends it, and the picture it was writing
    keeps its earlier version (or is whole, if it was renamed just before), with no .tmp file."""
    slow = pictures(tmp_path, mistakes=3000)[3]  # 3,000 captions: seconds of drawing
    target = tmp_path / "misclassified.png"
    target.write_bytes(b"the earlier picture")
    with ready(PictureWorkers(1)) as workers:
        worker = workers.workers[0]
        answer = []
        asking = threading.Thread(target=lambda: answer.append(picture_workers.ask(worker, slow)))
        asking.start()
        wait_until(lambda: list(tmp_path.glob(".misclassified.png.*.tmp")))  # writing it
        picture_workers.stop_all()
        asking.join()
        assert worker.poll() is not None and answer == [None]  # the worker is gone
    assert target.read_bytes() == b"the earlier picture" or is_png(target)
    assert not list(tmp_path.glob(".*.tmp"))


def test_stop_all_returns_when_a_worker_it_had_to_kill_has_ended(tmp_path):
    """A worker that does not answer SIGTERM within 2 s is killed; stop_all returned before
    it had ended (seen in test_a_second_ctrl_c_while_workers_draw_stops_them_before_quitting
    on a busy machine: worker.poll() was None). Here the worker is frozen (SIGSTOP)."""
    with ready(PictureWorkers(1)) as workers:
        worker = workers.workers[0]
        os.kill(worker.pid, signal.SIGSTOP)
        picture_workers.stop_all()
        assert worker.poll() == -signal.SIGKILL


def test_after_stop_all_no_worker_draws_a_picture_sent_to_it(tmp_path):
    """stop_all ends the idle workers too: a thread of draw() that sends its next picture
    just after (the program is quitting) gets False, and the picture is not written later,
    behind the message that said it was not."""
    with ready(PictureWorkers(1)) as workers:
        worker = workers.workers[0]
        picture_workers.stop_all()  # the second Ctrl-C, at an instant when no worker draws
        assert not picture_workers.ask(worker, pictures(tmp_path)[2])
    assert not (tmp_path / "confusion.png").exists()  # the worker was stopped, and waited for, before


def test_a_second_ctrl_c_while_workers_draw_stops_them_before_quitting(tmp_path, monkeypatch, capfd):
    import nn
    slow = pictures(tmp_path, mistakes=3000)[3]
    monkeypatch.setattr(os, "_exit", lambda status: sys.exit(status))
    with ready(PictureWorkers(1)) as workers:
        worker = workers.workers[0]
        asking = threading.Thread(target=picture_workers.ask, args=(worker, slow))
        asking.start()
        wait_until(lambda: list(tmp_path.glob(".misclassified.png.*.tmp")))  # writing it
        stop = nn.StopRequest()
        stop._handle(signal.SIGINT, None)  # the first: a request, which the worker does not hear
        assert worker.poll() is None
        with pytest.raises(SystemExit):
            stop._handle(signal.SIGINT, None)  # the second: quit at once
        assert worker.poll() is not None
        asking.join()
    assert not (tmp_path / "misclassified.png").exists() and not list(tmp_path.glob(".*.tmp"))
    assert "quit at once" in capfd.readouterr().err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own nice value is Linux's")
def test_warm_up_lowers_the_priority_of_its_own_thread_only():
    """Matplotlib loads at a lower priority, so that the training comes first; the pictures
    are drawn at the usual one (a worker niced as a whole drew them in 3-6 s on a busy machine)."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    seen = []

    def warm_up_and_look():
        picture_workers.warm_up(3)
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    thread = threading.Thread(target=warm_up_and_look)
    thread.start()
    thread.join()
    assert seen == [min(19, before + 3)] and os.getpriority(os.PRIO_PROCESS, 0) == before


def process_ended(pid):
    """True when process `pid` has exited (a zombie no one reaps counts as ended)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return any(line.split()[:2] == ["State:", "Z"] for line in status)
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="looks for the workers' processes in /proc")
def test_workers_of_a_run_killed_while_they_draw_finish_or_stop_and_leave_whole_files(tmp_path):
    """SIGKILL of the run while its workers draw: each worker ends (its input closes), and
    each picture is its earlier version or a whole new one, with no .tmp file beside it."""
    for picture in pictures(tmp_path):
        picture[1][0].write_bytes(b"the earlier picture")
    script = f"""
import os, signal, sys, threading, time
sys.path[:0] = [{str(PROJECT_DIR)!r}, {str(PROJECT_DIR / 'tests')!r}]
from pathlib import Path
from app import picture_workers
from test_picture_workers import pictures
workers = picture_workers.PictureWorkers(2)
print(*(worker.pid for worker in workers.workers), flush=True)
while len(workers.ready) < 2:
    time.sleep(0.02)
threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
workers.draw(pictures(Path({str(tmp_path)!r}), mistakes=2000))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    pids = [int(pid) for pid in result.stdout.split()]
    wait_until(lambda: all(process_ended(pid) for pid in pids))
    for picture in pictures(tmp_path):
        path = picture[1][0]
        assert path.read_bytes() == b"the earlier picture" or is_png(path), path.name
    assert not list(tmp_path.glob(".*.tmp"))

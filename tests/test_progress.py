"""progress.Progress on a terminal of a forced width."""

import io
import re

import pytest

from app.progress import Progress


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("columns", [80, 40])
def test_progress_line_fits_the_terminal_width(monkeypatch, columns):
    """Every refresh and every closed epoch line is shorter than the terminal is wide,
    so a refresh never wraps onto a new line (a 92-character line did at 80 columns)."""
    monkeypatch.setenv("COLUMNS", str(columns))  # shutil.get_terminal_size reads it first
    stream = FakeTerminal()
    progress = Progress(total_steps=20000, steps_per_epoch=937, stream=stream, refresh_per_second=1e9)
    for step in range(1, 938):
        progress.step(step, 0.1234)
    progress.end_epoch(937, {"test_loss": 0.0812, "test_accuracy": 0.9751})
    text = stream.getvalue()
    shown = [re.sub(r"\x1b\[K", "", piece) for line in text.split("\n") for piece in line.split("\r")]
    assert max(len(piece) for piece in shown if not piece.startswith("test_loss")) < columns, shown[-3:]
    assert text.count("\n") <= 2 and "loss: 0.1234" in text
    assert "test_accuracy: 0.9751" in text or "test: loss 0.0812, acc 0.9751" in text  # shorter words at 40 columns
    assert "Epoch 1/22" in shown[-3] or "Epoch 1/22" in shown[-2]


EVALUATIONS = {
    "test only": {"test_loss": 0.0812, "test_accuracy": 0.9751},
    "with --val-split": {"test_loss": 0.0812, "test_accuracy": 0.9751, "val_loss": 0.0934, "val_accuracy": 0.9713},
}


@pytest.mark.parametrize("columns", [40, 60, 80])
@pytest.mark.parametrize("case", sorted(EVALUATIONS))
def test_every_line_with_its_evaluation_fits_the_terminal(monkeypatch, columns, case):
    """The evaluation wrapped at 80 columns with --val-split, and at 40 with the test set
    alone: every line printed (refreshes, the closed epoch, its evaluation, an evaluation in
    mid-epoch, a message) is now shorter than the terminal is wide, with every number whole."""
    monkeypatch.setenv("COLUMNS", str(columns))
    evaluation = EVALUATIONS[case]
    stream = FakeTerminal()
    progress = Progress(total_steps=20000, steps_per_epoch=937, stream=stream, refresh_per_second=1e9)
    for step in range(1, 938):
        progress.step(step, 0.1234)
        if step == 500:
            progress.evaluation(step, evaluation)
    progress.end_epoch(937, evaluation)
    progress.message("SIGINT at step 937: saving what was reached (send it again to quit at once: files not "
                     "saved by then keep their old version)")
    text = stream.getvalue()
    shown = [re.sub(r"\x1b\[K", "", piece) for line in text.split("\n") for piece in line.split("\r")]
    assert max(len(piece) for piece in shown) < columns, [piece for piece in shown if len(piece) >= columns]
    for value in evaluation.values():  # each number whole, twice: in mid-epoch and at the epoch's end
        assert text.count(f"{value:.4f}") == 2, text
    assert "Epoch 1/22" in text and "loss: 0.1234" in text and "keep their old version" in " ".join(text.split())


@pytest.mark.parametrize("columns", [1, 2, 10])
def test_a_terminal_a_few_columns_wide_gets_lines_of_the_smallest_width(monkeypatch, columns):
    """A 1-column terminal stopped training with a traceback (textwrap refuses width 0):
    lines are then fitted to MIN_COLUMNS characters, and the terminal wraps them."""
    from app import progress as progress_module
    monkeypatch.setenv("COLUMNS", str(columns))
    stream = FakeTerminal()
    progress = Progress(total_steps=200, steps_per_epoch=100, stream=stream, refresh_per_second=1e9)
    for step in range(1, 101):
        progress.step(step, 0.1234)
    progress.end_epoch(100, EVALUATIONS["with --val-split"])
    progress.message("SIGINT at step 100: saving what was reached")
    shown = [re.sub(r"\x1b\[K", "", piece) for line in stream.getvalue().split("\n") for piece in line.split("\r")]
    assert "SIGINT at step 100:" in stream.getvalue() and "0.9713" in stream.getvalue()
    assert max(len(piece) for piece in shown) < progress_module.MIN_COLUMNS + 1


def terminal_lines(stream):
    """The lines a terminal shows: each \\r starts its line again, \\x1b[K clears the rest."""
    return [re.sub(r"\x1b\[K", "", line.split("\r")[-1]) for line in stream.getvalue().split("\n")]


def test_an_epoch_line_waits_for_its_evaluation_made_in_the_background(monkeypatch):
    """An evaluation made beside the training (monitor.Evaluations) comes some steps after its
    epoch ended: the epoch's line stays on screen as it ended, with no refresh of the next
    epoch, and the evaluation closes it, as it does when it comes at once. An evaluation
    that comes after the next epoch ended too gets lines of its own."""
    monkeypatch.setenv("COLUMNS", "100")
    from app import progress as progress_module
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: 5.0)  # the clock stands still: epochs of 0.0s
    evaluation = EVALUATIONS["test only"]
    at_once, waited = FakeTerminal(), FakeTerminal()
    for stream in (at_once, waited):
        progress = Progress(total_steps=30, steps_per_epoch=10, stream=stream, refresh_per_second=1e9)
        progress._rates = lambda step, until_step: (0.0005, 0.0)  # the clock aside
        for step in range(1, 11):
            progress.step(step, 0.5)
        if stream is at_once:
            progress.end_epoch(10, evaluation)
            continue
        progress.end_epoch(10, evaluation_follows=True)
        written = stream.getvalue()
        for step in range(11, 15):
            progress.step(step, 0.25)
        assert stream.getvalue() == written  # the next epoch is not drawn over the ended one
        progress.evaluation(10, evaluation)
        for step in range(15, 21):
            progress.step(step, 0.25)
        progress.end_epoch(20, evaluation_follows=True)
        for step in range(21, 31):
            progress.step(step, 0.125)  # epoch 3 ends before the evaluation of step 20 came
        progress.evaluation(20, evaluation)
        progress.end_epoch(30)  # no evaluation this epoch (--eval-every 20)
    assert terminal_lines(at_once) == [
        "Epoch 1/3 10/10 - 0.0s - loss: 0.5000 - 0.50 ms/step - test_loss: 0.0812 - test_accuracy: 0.9751", ""]
    assert terminal_lines(waited) == [
        terminal_lines(at_once)[0],
        "Epoch 2/3 [==============================] 10/10 - 0.0s - loss: 0.2500 - 0.50 ms/step",
        "Epoch 3/3 [==============================] 10/10 - 0.0s - loss: 0.1250 - 0.50 ms/step",
        "  evaluation at step 20:  test: loss 0.0812, acc 0.9751", ""], terminal_lines(waited)


class FakeClock:
    """time.perf_counter for a run whose steps take `step_s` each, after a first step of
    `first_step_s` (it allocates the buffers); `tick` moves it on by one step."""

    def __init__(self, first_step_s, step_s):
        self.now, self.first_step_s, self.step_s, self.steps = 100.0, first_step_s, step_s, 0

    def __call__(self):
        return self.now

    def tick(self):
        self.now += self.first_step_s if self.steps == 0 else self.step_s
        self.steps += 1


def run_with_clock(monkeypatch, stream, total_steps, steps_per_epoch, first_step_s, step_s, log_interval=None):
    from app import progress as progress_module
    clock = FakeClock(first_step_s, step_s)
    monkeypatch.setattr(progress_module.time, "perf_counter", clock)
    progress = Progress(total_steps=total_steps, steps_per_epoch=steps_per_epoch, stream=stream,
                        refresh_per_second=1e9, log_interval=log_interval)
    for step in range(1, total_steps + 1):
        clock.tick()
        progress.step(step, 0.5)
        if step % steps_per_epoch == 0 or step == total_steps:
            progress.end_epoch(step)
    return stream.getvalue()


def test_the_bar_shows_the_time_left_in_its_epoch_and_a_closed_epoch_its_duration(monkeypatch):
    """A bar counts the steps of one epoch, so its ETA is the time left in that epoch (was the
    whole run's: 'Epoch 1/4 [====] 937/937 - ETA 1.9s'); a finished epoch shows the time it took."""
    monkeypatch.setenv("COLUMNS", "120")
    text = run_with_clock(monkeypatch, FakeTerminal(), total_steps=400, steps_per_epoch=100, first_step_s=0.01,
                          step_s=0.01)
    shown = [re.sub(r"\x1b\[K", "", piece) for line in text.split("\n") for piece in line.split("\r")]
    at_50 = next(piece for piece in shown if " 50/100 " in piece and piece.startswith("Epoch 2/4"))
    assert "ETA 0.5s" in at_50, at_50  # 50 steps of 10 ms left in epoch 2 (the run has 250 left: 2.5 s)
    closed = [piece for piece in shown if " 100/100 " in piece]
    assert len(closed) >= 4 and all("ETA" not in piece for piece in closed), closed
    assert all(" - 1.0s - " in piece for piece in closed[1:]), closed  # 100 steps of 10 ms each


def test_the_first_estimate_in_a_log_leaves_the_slow_first_step_out(monkeypatch):
    """A first step of 2 s (buffers, caches) then 10,000 steps of 1 ms: at step 1,000 the time
    left is 9 s, and the log's first ETA is within 30 % of it (counting the first step in the
    speed said 27 s)."""
    text = run_with_clock(monkeypatch, io.StringIO(), total_steps=10_000, steps_per_epoch=1_000, first_step_s=2.0,
                          step_s=0.001)
    first = text.splitlines()[0]
    eta = float(re.search(r"ETA ([0-9.]+)s", first).group(1))
    assert first.startswith("step  1000/10000") and abs(eta - 9.0) <= 0.3 * 9.0, first

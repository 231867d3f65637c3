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
    evaluation = EVALUATIONS["test only"]
    at_once, waited = FakeTerminal(), FakeTerminal()
    for stream in (at_once, waited):
        progress = Progress(total_steps=30, steps_per_epoch=10, stream=stream, refresh_per_second=1e9)
        progress._rates = lambda step: (0.0005, 0.0)  # the clock aside
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
        "Epoch 1/3 [===========] 10/10 - ETA 0.0s - loss: 0.5000 - test_loss: 0.0812 - test_accuracy: 0.9751", ""]
    assert terminal_lines(waited) == [
        terminal_lines(at_once)[0],
        "Epoch 2/3 [==============================] 10/10 - ETA 0.0s - loss: 0.2500 - 0.50 ms/step",
        "Epoch 3/3 [==============================] 10/10 - ETA 0.0s - loss: 0.1250 - 0.50 ms/step",
        "  evaluation at step 20:  test: loss 0.0812, acc 0.9751", ""], terminal_lines(waited)

"""progress.Progress on a terminal of a forced width."""

import io
import re

import pytest

from progress import Progress


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
    assert text.count("\n") <= 2 and "test_accuracy: 0.9751" in text and "loss: 0.1234" in text
    assert "Epoch 1/22" in shown[-3] or "Epoch 1/22" in shown[-2]

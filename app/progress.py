"""Training progress on the console: a Keras-style bar on a terminal, plain lines in a log."""

import shutil
import sys
import textwrap
import time

MIN_COLUMNS = 30  # lines are fitted to no fewer characters: a narrower terminal wraps them itself


def pack(parts, width, separator=" - ", indent="  "):
    """The texts `parts` joined by `separator` into lines of at most `width` characters,
    a line broken only between parts (a number is never cut); a line after the first
    starts with `indent`. A part longer than `width` alone gets a line of its own."""
    lines = [parts[0]]
    for part in parts[1:]:
        if len(lines[-1] + separator + part) <= width:
            lines[-1] += separator + part
        else:
            lines.append(indent + part)
    return lines


def evaluation_parts(evaluation, short=False):
    """['test_loss: 0.0812', 'test_accuracy: 0.9751'] from {"test_loss": 0.0812, ...}, or
    with short=True one part a set, ['test: loss 0.0812, acc 0.9751'], for narrow terminals."""
    if not short:
        return [f"{name}: {value:.4f}" for name, value in evaluation.items()]
    sets = {}
    for name, value in evaluation.items():
        data_set, _, measure = name.partition("_")
        sets.setdefault(data_set, []).append(f"{measure.replace('accuracy', 'acc')} {value:.4f}")
    return [f"{data_set}: {', '.join(measures)}" for data_set, measures in sets.items()]


def format_duration(seconds):
    """'4.2s', '12s', '2m05s' or '1h02m': short, for ETAs."""
    if seconds < 10:
        return f"{max(seconds, 0):.1f}s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Reports training progress; the training loop calls ``step`` after every step.

    On a terminal (``stream.isatty()``) one line per epoch updates itself in
    place, at most ``refresh_per_second`` times a second; its ETA is the time left in
    that epoch, the one the bar shows:
        Epoch 3/22 [=====>........] 412/937 - ETA 0.3s - loss: 0.0912 - 0.62 ms/step
    and is closed with the epoch's summary, where the time the epoch took replaces the ETA
    (and the evaluation, when there is one: an evaluation made in the background closes it
    when it comes, a few dozen steps later):
        Epoch 3/22 [==============] 937/937 - 0.6s - loss: 0.0874 - 0.62 ms/step
    The line fits the terminal's width (shutil.get_terminal_size, which reads
    $COLUMNS first), as Keras's bar does: the bar shrinks, then the ms/step, the
    bar and the ETA are left out, so that a refresh never wraps onto a new line.
    Every other line fits too: the evaluation joins the closed line when it fits there
    (in shorter words if need be), else takes lines of its own, broken between
    numbers, never inside one; messages are wrapped between words.
    Elsewhere (a file, a pipe) it writes a plain line every ``log_interval`` steps:
        step  2000/20000  epoch  3/22  loss 0.1234  1620 steps/s  ETA 11s
    where the ETA is the time left for the whole run, as the line counts steps of the run.
    ``quiet`` prints nothing at all.

    Speeds are measured from the end of the run's first step: that step allocates the
    buffers and warms the caches, and counting it would make the first estimates too long.
    """

    def __init__(self, total_steps, steps_per_epoch, first_step=0, log_interval=None,
                 quiet=False, stream=None, refresh_per_second=8):
        self.stream = stream or sys.stdout
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self.total_epochs = -(-total_steps // steps_per_epoch)
        self.quiet = quiet
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.log_interval = log_interval or 1000
        self.min_refresh = 1.0 / refresh_per_second
        self.first_step = first_step
        self.start_time = time.perf_counter()
        self.clock_start = None  # (time, step) at the end of the first step: speeds count from there
        self.epoch_start_time = self.start_time
        self.last_refresh = 0.0
        self.epoch_loss_sum = 0.0
        self.epoch_steps = 0
        self.interval_loss_sum = 0.0
        self.interval_steps = 0
        self.line_open = False
        self.bar = None  # what the bar line shows: (step, epoch, in_epoch, mean loss, s/step, "ETA 25s" or "0.6s")
        self.closing = None  # (step, bar) of an ended epoch whose line waits for its evaluation

    def _rates(self, step, until_step):
        """(seconds per step, seconds left until step ``until_step``): the speed since the end
        of the first step (since the start, when only one step was made)."""
        now = time.perf_counter()
        if self.clock_start is None or step <= self.clock_start[1]:
            per_step = (now - self.start_time) / max(step - self.first_step, 1)
        else:
            per_step = (now - self.clock_start[0]) / (step - self.clock_start[1])
        return per_step, per_step * max(until_step - step, 0)

    def _epoch_end(self, epoch):
        """The last step of epoch ``epoch`` (1-based): the last epoch may be cut short."""
        return min(epoch * self.steps_per_epoch, self.total_steps)

    def _write(self, text):
        self.stream.write(text)
        self.stream.flush()

    def step(self, step, loss):
        """Record the loss of training step ``step`` (1-based count of steps done)."""
        if self.clock_start is None:
            self.clock_start = (time.perf_counter(), step)
        self.epoch_loss_sum += loss
        self.epoch_steps += 1
        self.interval_loss_sum += loss
        self.interval_steps += 1
        if self.quiet:
            return
        in_epoch = (step - 1) % self.steps_per_epoch + 1
        epoch = (step - 1) // self.steps_per_epoch + 1
        if self.interactive:
            now = time.perf_counter()
            epoch_ends = in_epoch == self.steps_per_epoch or step == self.total_steps
            if self.closing is not None:  # the last epoch's line waits for its evaluation
                if not epoch_ends:
                    return
                self._write("\n")  # this epoch ends before it came: the evaluation gets lines of its own
                self.closing = None
            if now - self.last_refresh >= self.min_refresh or epoch_ends:
                self.last_refresh = now
                per_step, left = self._rates(step, self._epoch_end(epoch))
                shown = format_duration(now - self.epoch_start_time) if epoch_ends else "ETA " + format_duration(left)
                self.bar = (step, epoch, in_epoch, self.epoch_loss_sum / max(self.epoch_steps, 1), per_step, shown)
                self._write("\r" + self._bar_line(self.bar) + "\x1b[K")
                self.line_open = True
        elif step % self.log_interval == 0 or step == self.total_steps:
            per_step, left = self._rates(step, self.total_steps)
            width = len(str(self.total_steps))
            loss_text = self.interval_loss_sum / max(self.interval_steps, 1)
            self._write(f"step {step:{width}d}/{self.total_steps}  epoch {epoch:2d}/{self.total_epochs}  "
                        f"loss {loss_text:.4f}  {1 / per_step:.0f} steps/s  ETA {format_duration(left)}\n")
            self.interval_loss_sum = 0.0
            self.interval_steps = 0

    def writes_log_line_at(self, step):
        """True when ``step(step, ...)`` writes a line of a log (not on a terminal, not quiet):
        the training shows the evaluations under way before it, in the order of their steps."""
        return (not self.quiet and not self.interactive
                and (step % self.log_interval == 0 or step == self.total_steps))

    @staticmethod
    def _columns():
        """The characters a line may hold: one fewer than the terminal's columns (the last
        column makes some terminals wrap), and at least MIN_COLUMNS: a narrower terminal
        wraps the lines itself."""
        # A terminal that reports no size gives 0 columns on Python 3.10 (80, the fallback,
        # on later versions): take 80 then too.
        return max((shutil.get_terminal_size().columns or 80) - 1, MIN_COLUMNS)

    def _bar_line(self, bar, suffix="", max_bar=30):
        """The progress line of `bar` (see __init__), `suffix` (the evaluation) included, in
        fewer characters than the terminal has columns."""
        columns = self._columns()
        step, epoch, in_epoch, mean_loss, per_step, time_text = bar
        loss = f" - loss: {mean_loss:.4f}"
        eta, speed = f" - {time_text}", f" - {per_step * 1000:.2f} ms/step"
        head, count = f"Epoch {epoch}/{self.total_epochs} ", f"{in_epoch}/{self.steps_per_epoch}"
        for parts in ((eta, loss, speed), (eta, loss), (loss,)):
            rest = count + "".join(parts) + suffix
            bar_width = min(max_bar, columns - len(head) - len(rest) - 3)  # 3: "[", "] "
            if bar_width >= 10:
                filled = bar_width * in_epoch // self.steps_per_epoch
                bar = "=" * filled if filled == bar_width else "=" * filled + ">" + "." * (bar_width - filled - 1)
                return f"{head}[{bar}] {rest}"
            if len(head) + len(rest) <= columns:
                return head + rest
        return (head + rest)[:columns]

    def end_epoch(self, step, evaluation=None, evaluation_follows=False):
        """Close the epoch that ended at ``step``; evaluation is a dict such as
        {"test_loss": 0.08, "test_accuracy": 0.97}, shown at the end of its line.
        evaluation_follows=True: the evaluation of this step is being made, and
        ``evaluation(step, ...)`` will close the line with it."""
        if not self.quiet:
            if self.interactive:
                if self.line_open and evaluation_follows:
                    self.closing = (step, self.bar)
                elif self.line_open:
                    self._write("\r" + self._closed_line(self.bar, evaluation or {}) + "\x1b[K\n")
                    self.line_open = False
            elif evaluation:
                self.evaluation(step, evaluation)
        self.epoch_loss_sum = 0.0
        self.epoch_steps = 0
        self.epoch_start_time = time.perf_counter()

    def _closed_line(self, bar, evaluation):
        """The epoch's last bar line with its evaluation: on the bar line when both fit, in
        long words or short ones; else the bar line, then the evaluation on lines of their
        own, as many as the width needs."""
        for short in (False, True):
            extra = "".join(" - " + part for part in evaluation_parts(evaluation, short))
            line = self._bar_line(bar, suffix=extra)
            if line.endswith(extra):
                return line
        lines = pack(evaluation_parts(evaluation, short=True), self._columns(), indent="")
        return self._bar_line(bar) + "".join("\x1b[K\n" + line for line in lines)

    def evaluation(self, step, evaluation):
        """Show an evaluation made at ``step``: at the end of the line of the epoch that ended
        there, when it waits for it, else in the middle of an epoch (or in a log)."""
        if self.quiet:
            return
        if self.closing is not None and self.closing[0] == step:
            self._write("\r" + self._closed_line(self.closing[1], evaluation) + "\x1b[K\n")
            self.closing, self.line_open = None, False
            return
        if not self.interactive:  # a log keeps one line per evaluation
            self.message(f"  evaluation at step {step}: "
                         + "  ".join(f"{name} {value:.4f}" for name, value in evaluation.items()))
            return
        lines = pack([f"  evaluation at step {step}:", *evaluation_parts(evaluation, short=True)],
                     self._columns(), separator="  ", indent="    ")
        self.message("\n".join(lines))

    def message(self, text):
        """Print text, on lines of its own even in the middle of a bar; on a terminal,
        wrapped between words to its width."""
        if self.interactive and self.line_open:
            self._write("\n")
            self.line_open, self.closing = False, None
        if self.interactive:
            text = "\n".join(wrapped for line in text.split("\n") for wrapped in
                             textwrap.wrap(line, self._columns(), subsequent_indent="  ", break_long_words=False,
                                           break_on_hyphens=False, drop_whitespace=True) or [""])
        self._write(text + "\n")

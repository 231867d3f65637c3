"""Ctrl-C and SIGTERM during a run: the first is a request to stop, seen by the training
loop at its next step (the run then saves what it reached); a second ends the program at
once, leaving every output whole (old or new) and no empty folder it created."""

import contextlib
import os
import shutil
import signal
import time

from app import atomic, save

EXIT_INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}
# A SIGTERM again within this many seconds is the same request, not a second one: GNU
# timeout, for one, sends SIGTERM to the process and then to its whole process group. (A
# second Ctrl-C, however quick, is a person asking to quit at once.)
SAME_SIGNAL_S = 0.5


class StopRequest:
    """Turns SIGINT and SIGTERM into a request the training loop sees at its next
    step (`signal`, None until one arrives); a second signal ends the program at once,
    removing the temporary file of the output being written, a run folder not yet
    complete, and the folders the run created that are still empty (created_folders,
    deepest first)."""

    def __init__(self, created_folders=()):
        self.signal = None
        self.saving = None  # (out_dir, save.folder_contents(out_dir)) once the save has begun
        self.created_folders = list(created_folders)  # the save adds runs/ when it creates it (save.save_run)
        self.run_folder = None  # the run folder, once the save has created it

    def __enter__(self):
        # A signal the parent ignores stays ignored (a job started with `nn.py &` from a script ignores Ctrl-C)
        self.previous = {s: signal.signal(s, self._handle) for s in EXIT_INTERRUPTED
                         if signal.getsignal(s) is not signal.SIG_IGN}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _handle(self, number, frame):
        if self.signal is not None:
            if number == self.signal == signal.SIGTERM and time.monotonic() - self.signal_time < SAME_SIGNAL_S:
                return  # the first SIGTERM again (see SAME_SIGNAL_S)
            os.write(2, (self.quit_message() + "\n").encode())  # os.write: print may be mid-write
            atomic.remove_unfinished()  # the file being written keeps its old version, and no .tmp beside it
            if self.run_folder is not None and not (self.run_folder / save.STATS_FILE).exists():
                shutil.rmtree(self.run_folder, ignore_errors=True)  # without its stats.json: not complete
            remove_empty_folders(self.created_folders)
            os._exit(EXIT_INTERRUPTED.get(number, 1))
        self.signal, self.signal_time = signal.Signals(number), time.monotonic()

    def quit_message(self):
        """The line said when a second signal ends the program: what was saved and what not."""
        if self.saving is None:
            return "nn.py: quit at once: nothing was saved; earlier outputs are intact"
        return f"nn.py: quit during the save: {save.saved_so_far(*self.saving)}"


def remove_empty_folders(folders):
    """Remove each of `folders` (deepest first) that is empty: a run that stops before
    writing anything leaves no new empty folder behind, and one that wrote keeps its files."""
    for folder in folders:
        with contextlib.suppress(OSError):  # not empty (or gone already): kept
            folder.rmdir()

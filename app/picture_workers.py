"""Draw a run's pictures in two helper processes that import Matplotlib while the network trains.

Of the second or so that `python nn.py` spent outside its training, most went to
Matplotlib: importing it (0.3 s) and drawing the five pictures (0.6 s), one after
the other, once training was over. A worker is a second Python process, `python
picture_workers.py`, started with the run: it imports Matplotlib and draws a first
small figure into memory (warm_up) on the core that training leaves free, in a thread
of lower priority (nice 10, on Linux) so that the training comes first, then says it
is ready and waits. When the run is saved, the workers that are ready draw its pictures
side by side, at the usual priority, each taking the next one as soon as it is free,
and the run waits only for the drawing. A worker not ready by then (a short run, or a
machine so busy that the low-priority loading has hardly begun) is not waited for.

A worker reads pickled pictures on its standard input, each a tuple (the name of a
function of plots.py, its arguments, its keyword arguments), and answers each with
True (drawn and written) or False (it could not). The pictures that no worker drew,
because one failed, died or was never started, are drawn by the run itself
afterwards, as they would be without workers: a worker can cost time, never a
picture, and an error (a full disk) is reported as if there were no workers.

A worker ignores Ctrl-C (the run decides what a signal means: stop training, then
save), ends when its input closes (the run ended, or was killed; at once unless it is
still loading Matplotlib), and on SIGTERM (stop_all) stops after removing the temporary
file of the picture it was writing (atomic.py), which keeps its earlier version.
"""

import os
import pickle
import queue
import signal
import subprocess
import sys
import threading

_running = set()  # the workers this process started and has not closed yet, for stop_all


# A worker is this module run in a new interpreter, the project folder first on its path.
WORKER_START = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r}); "
                "import app.picture_workers; app.picture_workers.main()")


class PictureWorkers:
    """`count` worker processes, started now, that draw pictures (see the module's
    docstring); with count 0, or when a worker cannot be started, this process draws.
    Use as a context manager, so that the workers end with the block.

    A picture is a tuple (name of a function of plots.py, its positional arguments,
    its keyword arguments), such as ("loss_graph", (path, steps, losses, evaluations), {})."""

    def __init__(self, count):
        self.workers = []
        self.ready = set()  # the workers that said they are ready: they have loaded Matplotlib
        self.asked = set()  # the workers given a picture; close() stops the others rather than wait for them
        self.listeners = []  # a thread for each worker, waiting for it to say it is ready
        for _ in range(count):
            try:
                worker = subprocess.Popen(
                    [sys.executable, "-c", WORKER_START], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL, env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
            except (OSError, ValueError):  # no process to be had, no executable: this process draws
                break
            listener = threading.Thread(target=self._listen_for_ready, args=(worker,), daemon=True)
            try:
                listener.start()
            except RuntimeError:  # no thread to be had (the same limit as for processes): this process draws
                worker.terminate()
                worker.wait()
                for pipe in (worker.stdin, worker.stdout):
                    pipe.close()
                break
            _running.add(worker)
            self.workers.append(worker)
            self.listeners.append(listener)

    def _listen_for_ready(self, worker):
        """Wait for `worker`'s first answer, "ready", and note it (in a thread of its own,
        blocked on the pipe meanwhile: the training does not feel it)."""
        try:
            if pickle.load(worker.stdout) == "ready":
                self.ready.add(worker)
        except (OSError, EOFError, ValueError, pickle.UnpicklingError):  # the worker died, or was stopped
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def draw(self, pictures):
        """Draw and write every picture, spread over the workers that are ready (each takes
        the next one as soon as it is free), and return when all are written; the pictures
        that no worker drew are drawn here afterwards, in their order, raising what they
        raise. A worker still loading Matplotlib (a short run, or a machine so busy that
        the loading, at a low priority, has hardly begun) is not waited for."""
        pending = queue.SimpleQueue()
        for index in range(len(pictures)):
            pending.put(index)
        undrawn = []

        def feed(worker):  # in a thread of its own, one for each worker
            while True:
                try:
                    index = pending.get_nowait()
                except queue.Empty:
                    return
                self.asked.add(worker)
                answer = ask(worker, pictures[index])
                if answer is not True:
                    undrawn.append(index)
                if answer is None:  # the worker is gone: the others take the rest, not it (failing at once)
                    return

        ready = [worker for worker in self.workers if worker in self.ready]
        for worker in self.workers:
            if worker not in ready:  # stopped now, to leave the cores to the drawing; not with terminate(),
                try:  # whose lock a second Ctrl-C's stop_all would wait on
                    os.kill(worker.pid, signal.SIGTERM)
                except OSError:  # it has ended already (Windows says so; elsewhere it is a zombie until close)
                    pass
        threads = [threading.Thread(target=feed, args=(worker,)) for worker in ready]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        while not pending.empty():  # left when there is no worker, or every one is gone
            undrawn.append(pending.get())
        for index in sorted(undrawn):
            draw_here(pictures[index])

    def close(self):
        """End the workers: each one asked to draw reads the end of its input and exits at
        once; the others (still loading Matplotlib, or not needed) are stopped."""
        for worker in self.workers:
            if worker not in self.asked:
                worker.terminate()
            try:
                worker.stdin.close()
            except OSError:  # the worker is gone already
                pass
        for worker in self.workers:
            worker.wait()
            _running.discard(worker)
        for listener in self.listeners:  # each has heard "ready" or the end of its worker's output
            listener.join()
        for worker in self.workers:
            worker.stdout.close()
        self.workers, self.listeners = [], []


def draw_here(picture):
    """Draw and write one picture in this process."""
    from app import plots
    name, args, kwargs = picture
    with plots.collector_paused():
        getattr(plots, name)(*args, **kwargs)


def ask(worker, picture):
    """Send `picture` to `worker` and wait for its answer: True when it drew and wrote it,
    False when it could not (or the picture cannot be sent), None when the worker is gone
    (it died or was stopped), so that it is asked no more."""
    try:
        message = pickle.dumps(picture)  # whole, before anything is sent
    except Exception:  # arguments that cannot be sent to another process: drawn here
        return False
    try:
        worker.stdin.write(message)
        worker.stdin.flush()
        return pickle.load(worker.stdout) is True
    except (OSError, EOFError, pickle.UnpicklingError):  # the worker died or was stopped
        return None


def stop_all():
    """Stop every worker of this process, for a program about to quit at once (nn.py's
    second Ctrl-C): each removes the temporary file of the picture it was writing, which
    keeps its earlier version. The idle ones too: a thread of draw() may be about to send
    one its next picture, which it would then draw and write after the program had quit.
    A worker that has not stopped within 2 s (a machine too busy to run it) is killed, which
    leaves its temporary file (.NAME.*.tmp) beside the picture; each has ended on return."""
    stopping = list(_running)
    for worker in stopping:
        worker.terminate()
    for worker in stopping:
        try:
            worker.wait(timeout=2)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()  # a killed process ends at once, but not before kill() returns


def work(pictures, answers):
    """A worker's life: get ready to draw (warm_up, at a low priority) and say "ready" on
    `answers`, then draw each picture read from `pictures` and write True (written) or
    False (failed) to `answers`, until `pictures` ends."""
    warming_up = threading.Thread(target=warm_up, args=(10,))
    warming_up.start()
    warming_up.join()
    pickle.dump("ready", answers)
    answers.flush()
    while True:
        try:
            picture = pickle.load(pictures)
        except EOFError:
            return
        try:
            draw_here(picture)
            drawn = True
        except Exception:  # the run draws it again itself, and reports what that raises
            drawn = False
        pickle.dump(drawn, answers)
        answers.flush()


def warm_up(niceness=0):
    """Import and load what every picture needs (Matplotlib's figures, its Agg canvas and
    PNG writer, the font) by drawing a small figure into memory: done while the run
    trains, it takes 0.2 s off the first picture of a fresh process.

    niceness: lower the priority of the calling thread by that much first, where a thread
    has a priority of its own (Linux), so that the training, on its core, comes first
    while Matplotlib loads. Only this thread: the pictures are drawn at the usual
    priority, and on a machine whose other programs keep the cores busy a whole worker
    at nice 10 took 3 to 6 s to draw them instead of 0.9 s."""
    if niceness and sys.platform.startswith("linux"):  # there the nice value of a thread id is the thread's own
        thread = threading.get_native_id()
        try:
            os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + niceness))
        except OSError:  # not allowed here: loaded at the usual priority
            pass
    import io
    from app import plots
    figure, axes = plots.new_figure(2, 2)
    axes.set_title("0123456789")
    figure.savefig(io.BytesIO(), format="png", dpi=plots.DPI)


def main():
    """`python picture_workers.py`, started by PictureWorkers: work on standard input and output."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches every process of the terminal: the run's to answer
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(1))  # stop_all: atomic_write removes its file
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes where errors go, not among the answers
    try:
        work(sys.stdin.buffer, answers)
    finally:
        os._exit(0)  # at once, ended or stopped: nothing is left to write, and the run may be waiting


if __name__ == "__main__":
    main()

"""What `python nn.py` does before NumPy loads: check the versions of Python and the
packages, take over Ctrl-C while it starts, and set the BLAS thread count.

This file must stay readable by older Pythons up to the version check (it names the
version they are too old for, in one line)."""

import os
import re
import signal
import sys
from pathlib import Path

# The lowest versions the project supports (requirements.txt and the README say the same;
# .ci/run tests them).
LOWEST_PYTHON = (3, 10)
LOWEST_PACKAGES = {"numpy": (1, 25, 2), "matplotlib": (3, 7, 5)}
PAGE_PACKAGES = {"waitress": (3, 0, 1)}  # the drawing page's web server: `nn.py serve` only, never training
PROJECT_DIR = Path(__file__).resolve().parent.parent


def begin(argv):
    """Start `python nn.py ARGV`: one line and exit 1 for a Python or package too old;
    Ctrl-C before training ends it at once with one line; BLAS threads from --threads.
    Returns whether the parent made the program ignore Ctrl-C (`nn.py &` in a script)."""
    sigint_ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if not sigint_ignored:
        signal.signal(signal.SIGINT, _interrupted_while_starting)
    problem = unsupported_versions()
    if problem:
        sys.exit("nn.py: error: " + problem)
    set_blas_threads(argv)
    return sigint_ignored


def version_tuple(text):
    """(1, 25, 2, 1) from "1.25.2": the three leading numbers, then 1 for a release (or a
    post-release, "1.25.2.post1") and 0 for a pre-release ("1.25.2rc1", "1.25.2.dev0"),
    which comes before the release it leads to."""
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?(.*)", text.strip())
    if not match:
        return (0, 0, 0, 0)
    numbers = tuple(int(number or 0) for number in match.groups()[:3])
    is_pre_release = re.match(r"[.\-_]?(a|b|c|rc|alpha|beta|pre|preview|dev)", match.group(4).lower())
    return numbers + (0 if is_pre_release else 1,)


def unsupported_versions():
    """One line saying what is missing or too old (Python, NumPy, Matplotlib) and what to do, or None.

    Read from the installed packages' metadata, before anything is imported, so that an
    old version gets this line instead of an error from deep inside."""
    if sys.version_info < LOWEST_PYTHON:
        return "Python {} is older than {}.{}, the lowest this project supports: run nn.py with a newer one".format(
            sys.version.split()[0], *LOWEST_PYTHON)
    import importlib
    from importlib import metadata
    for name, lowest in LOWEST_PACKAGES.items():
        wanted = ".".join(map(str, lowest))
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:  # importable without metadata (a bare copy)?
            try:
                installed = importlib.import_module(name).__version__
            except Exception:  # not there, or broken beyond telling its version
                return f"{name} is not installed for {sys.executable}: {install_advice()}"
        if version_tuple(installed) < lowest + (1,):
            return (f"{name} {installed} is older than {wanted}, the lowest this project supports: "
                    f"{install_advice()}")
    return None


def install_advice(project_dir=None):
    """What to type to get the packages: in a shell where the project's virtual environment
    (.venv beside nn.py, as the README makes it) is not active, activate it first (a new
    shell forgets it); otherwise pip install."""
    venv = Path(project_dir or PROJECT_DIR) / ".venv"
    if sys.prefix == sys.base_prefix and venv.is_dir():
        activate = venv / ("Scripts" if os.name == "nt" else "bin") / "activate"
        return f"activate the project's virtual environment first (. {activate}), or pip install -r requirements.txt"
    return "pip install -r requirements.txt"


def _interrupted_while_starting(number, frame):
    """SIGINT while the program starts (NumPy and the modules load, a fraction of a
    second): nothing is written yet, so it ends at once with one line, not with a
    traceback from inside an import."""
    os.write(2, b"nn.py: interrupted while starting; nothing was written\n")
    os._exit(130)


class _FlagsDoNotParse(Exception):
    """Raised instead of exiting while the flags are read for the thread count only."""


def _raise_flags_do_not_parse(message):
    raise _FlagsDoNotParse(message)


def usable_cores():
    """How many CPU cores this process may run on (its affinity mask where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def set_blas_threads(argv):
    """Set the BLAS thread count from --threads before NumPy is imported, the only time
    it can be set without extra packages. The flags are read by the same parser as the
    run's, so an abbreviation such as --thread counts; a command line that does not
    parse, or a subcommand, is left to main() to report. The default, 1, was chosen by
    measurement (benchmarks/README.md, "Figures on the project machine"). An
    OPENBLAS_NUM_THREADS already in the environment is kept when --threads is not given."""
    from app import cli
    threads = None
    if argv and not argv[0].startswith("-"):
        argv = []  # a subcommand such as predict: no --threads
    parser = cli.build_parser()
    parser.error = _raise_flags_do_not_parse
    try:
        threads = parser.parse_known_args(argv)[0].threads
    except _FlagsDoNotParse:
        pass
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if threads is not None and threads > 0:
            os.environ[variable] = str(threads)
        else:
            os.environ.setdefault(variable, "1")
    cores = usable_cores()
    if threads is not None and threads > cores:
        print(f"nn.py: warning: --threads {threads} is more than the {cores} CPU cores this process may use; "
              f"the extra threads only wait for a core and slow the run down", file=sys.stderr)
    elif hasattr(os, "getloadavg"):
        warning = busy_cores_warning(threads, cores, os.getloadavg()[0])
        if warning:
            print(warning, file=sys.stderr)


def busy_cores_warning(threads, cores, load_average):
    """One line of warning when other programs leave fewer idle cores than `threads`, or None.

    load_average: the machine's 1-minute load average (os.getloadavg()[0]), read before
    this run starts working, so it counts the other programs. BLAS threads that must
    share a core wait for each other at every matrix product."""
    if threads is None or threads <= 1:
        return None
    busy = min(int(round(load_average)), cores)
    if cores - busy >= threads:
        return None
    return (f"nn.py: warning: --threads {threads}, but other programs keep about {busy} of the {cores} CPU cores "
            f"busy (load average {load_average:.1f}); expect it to be slower than --threads 1")


def blas_threads():
    """The BLAS thread count that OPENBLAS_NUM_THREADS sets (nn.py sets it from --threads),
    as a number; the text itself when it is no whole number; None when it is not set."""
    value = os.environ.get("OPENBLAS_NUM_THREADS")
    return int(value) if value is not None and value.strip().isdigit() and value.isascii() else value


def evaluations_in_background():
    """True when the evaluations during training can have a core of their own: the
    training uses one BLAS thread (nn.py's default) and the process may run on two or
    more cores, so that one of them would otherwise sit idle."""
    return blas_threads() == 1 and usable_cores() >= 2

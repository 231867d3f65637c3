"""How `python nn.py` ends when something goes wrong: one line naming the file or the
flag and what to do, an exit status that says what happened, never a traceback, and
the outputs of earlier runs intact."""

import os
import sys

from app import data, save
from app.cli import SUBCOMMANDS, UsageError
from app.model_file import ModelFileError
from app.monitor import Diverged
from app.report import divergence_advice

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE's number, what a shell reports for a program ended by it


def reported_in_one_line(run, args):
    """run(args)'s exit status; an error it raises is said in one line on stderr, with
    status 2 for a flag that cannot work, 130 for Ctrl-C before training, 1 otherwise."""
    data_files_before = save.folder_contents(args.data)
    try:
        return run(args)
    except UsageError as error:
        print(f"nn.py: error: {error}", file=sys.stderr)
        return 2
    except data.DataError as error:
        hint = ""
        if ".csv" in str(error).split(":")[0]:
            hint = " (fix the file, or delete it to have it written again from the MNIST IDX files)"
        print(f"nn.py: error: {error}{hint}", file=sys.stderr)
        return 1
    except (ModelFileError, save.SaveFailed) as error:
        print(f"nn.py: error: {error}", file=sys.stderr)
        return 1
    except Diverged as error:
        print(f"nn.py: error: training diverged: {error}. The learning rate is probably too high "
              f"({divergence_advice(error.config)}); nothing was saved, earlier outputs are intact.",
              file=sys.stderr)
        return 1
    except MemoryError:
        print("nn.py: error: out of memory (are --steps, --hidden or --batch-size too large?); "
              "nothing was saved, earlier outputs are intact.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        written = sorted(name for name, mtime in save.folder_contents(args.data).items()
                         if data_files_before.get(name) != mtime and not name.startswith("."))
        done = (f"it wrote {', '.join(written)} in {args.data} (complete files: each is written under a "
                f"temporary name, then renamed) and nothing else" if written else "nothing was written")
        print(f"nn.py: interrupted before training started; {done}", file=sys.stderr)
        return 130


def quiet_on_closed_output(main, argv=None):
    """main(argv), but a reader that stops reading early (`python nn.py predict ... | head`)
    ends the program quietly, with the shell's status for SIGPIPE, 141, instead of a
    BrokenPipeError traceback: the recipe of the Python docs (signal module, "Note on
    SIGPIPE"), which points stdout at devnull so that the final flush cannot fail again.
    A training run whose output is closed ends the same way, as any program does on a
    closed pipe, but says so on stderr: what it had not saved is lost, earlier outputs
    are intact."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        status = main(argv)
        sys.stdout.flush()  # here, where the error can be caught, not at interpreter exit
        return status
    except KeyboardInterrupt:  # where main() and its subcommands do not say more (predict, flags, imports)
        print("nn.py: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if not (argv and argv[0] in SUBCOMMANDS):
            print("nn.py: stopped: its output was closed (a reader such as | head ended); a run stopped "
                  "before its save leaves the earlier outputs as they were", file=sys.stderr)
        return EXIT_BROKEN_PIPE

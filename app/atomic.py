"""Write files so that a reader sees either the old file or the whole new one."""

import contextlib
import os
import tempfile


# The temporary files of the writes under way, for remove_unfinished.
_unfinished = set()


def remove_unfinished():
    """Remove the temporary files of the writes still under way: for a program about to
    quit at once with os._exit (nn.py's second Ctrl-C), which skips atomic_write's own
    clean-up and would leave a stray .NAME.*.tmp file beside each file being written."""
    for temporary in list(_unfinished):
        with contextlib.suppress(OSError):  # renamed onto its path, or removed, meanwhile
            os.unlink(temporary)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Yield a file object for a temporary file beside ``path``; rename it onto
    ``path`` only when the block finishes without an exception.

    A run that fails, is interrupted or is killed (even with SIGKILL) therefore
    leaves the previous ``path`` intact: at worst a stray ``.NAME.*.tmp`` file
    remains. The temporary file is in the same folder, so the rename is atomic.
    An OSError names ``path``, the file the caller asked for, not the temporary one.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    except OSError as error:  # a folder that is gone or read-only: named as the file asked for
        raise OSError(error.errno, error.strerror or str(error), path) from error
    _unfinished.add(temporary)
    try:
        os.chmod(temporary, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(error, OSError) and error.filename in (None, temporary):
            raise OSError(error.errno, error.strerror or str(error), path) from error
        raise
    finally:
        _unfinished.discard(temporary)

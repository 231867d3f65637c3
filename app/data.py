"""MNIST on disk: IDX files -> CSV files -> checked arrays, with a binary cache.

CSV format: one image a line, the label (0-9) first, then 784 integer pixels
(0-255), comma separated, no header. A first line that is a header
(``label,1x1,1x2,...``), a UTF-8 byte-order mark and Windows line endings are
accepted too. Parsing and writing work on bytes with NumPy, a few megabytes at a
time, so they take about a second for the 110 MB training file; the parsed
arrays are cached beside the CSV and reused while the CSV is unchanged.

Every problem with a file is raised as DataError, whose message is one line
that names the file (and the line, where there is one).
"""

import gzip
import hashlib
import math
import os
import time
import zlib
from pathlib import Path

import numpy as np

from app.atomic import atomic_write
from app.cli import DRY_RUN_TEST_IMAGES, DRY_RUN_TRAIN_IMAGES, UsageError
from app.words import count

N_PIXELS = 28 * 28
N_CLASSES = 10
CHUNK_BYTES = 1 << 22
CACHE_VERSION = 2
RACY_WINDOW_NS = 2 * 10**9  # the coarsest timestamps in common use (FAT) tick every 2 s

IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# The SHA-256 of the official MNIST files (decompressed), kept with the project.
PROJECT_DATASETS = Path(__file__).resolve().parent.parent / "datasets"  # datasets/ beside nn.py
MNIST_CHECKSUMS = PROJECT_DATASETS / "SHA256SUMS"


def to_inputs(pixels, out=None):
    """Network inputs from uint8 pixels: float32 in [0, 1], same shape (written to out if given)."""
    if out is None:
        out = np.empty(pixels.shape, np.float32)
    np.copyto(out, pixels)  # then scale in place: faster than a mixed-type multiply
    out *= np.float32(1 / 255)
    return out


class DataError(Exception):
    """A data file that is missing, damaged or malformed; the message says which and why."""


# ---------------------------------------------------------------- IDX files

def read_checksums(path):
    """{file name: sha256 hex} from a SHA256SUMS file (``HEX  NAME`` lines)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise DataError(f"{path}: cannot read the checksums ({error.strerror})") from None
    checksums = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 2:
            checksums[parts[1].lstrip("*")] = parts[0].lower()
    return checksums


def read_idx(path, expected_sha256=None):
    """The array stored in a (gzipped) IDX file of unsigned bytes.

    Checks the magic number, that the size matches the header, and, when
    expected_sha256 is given, the SHA-256 of the decompressed content.
    Returns shape (n,) for IDX1 (labels) and (n, rows, cols) for IDX3 (images).
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DataError(f"{path}: damaged or truncated gzip file ({error}); copy it again from the MNIST originals") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 3:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (magic number {raw[:4].hex() or 'missing'})")
    n_dims = raw[3]
    header_size = 4 + 4 * n_dims
    if len(raw) < header_size:
        raise DataError(f"{path}: IDX header cut short ({len(raw)} bytes)")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(n_dims)]
    expected_size = header_size + math.prod(dims)  # Python integers: no overflow
    if len(raw) != expected_size:
        raise DataError(f"{path}: size {len(raw)} bytes does not match its header {dims} ({expected_size} bytes)")
    if expected_sha256 is not None and hashlib.sha256(raw).hexdigest() != expected_sha256:
        raise DataError(f"{path}: checksum mismatch (SHA-256 differs from SHA256SUMS); copy it again from the MNIST originals")
    return np.frombuffer(raw, np.uint8, offset=header_size).reshape(dims)


def read_idx_pair(images_path, labels_path, checksums=None):
    """(images (N, 784) uint8, labels (N,) uint8) from an IDX3 image file and an IDX1 label file."""
    def expected(path):
        if checksums is None:
            return None
        name = Path(path).name.removesuffix(".gz")
        if name not in checksums:
            raise DataError(f"{path}: no checksum for {name} in SHA256SUMS")
        return checksums[name]

    images = read_idx(images_path, expected(images_path))
    labels = read_idx(labels_path, expected(labels_path))
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: expected 28x28 images, found shape {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{labels_path}: {count(labels.size, 'label')} for {count(len(images), 'image')} "
                        f"in {images_path}")
    if labels.max(initial=0) >= N_CLASSES:
        raise DataError(f"{labels_path}: label {labels.max()} outside 0-9")
    return images.reshape(len(images), N_PIXELS), labels


# ------------------------------------------------------------ writing CSVs

def _token_table(terminator):
    """(256,) uint32: the bytes of the decimal text of each value 0-255 followed by
    the terminator, zero padded to 4 bytes (``b"7,\\0\\0"``), one uint32 each so
    that a whole row of tokens is a single gather."""
    table = np.zeros((256, 4), np.uint8)
    for value in range(256):
        text = f"{value}{terminator}".encode()
        table[value, :len(text)] = np.frombuffer(text, np.uint8)
    return table.view(np.uint32)[:, 0]


_WITH_COMMA = _token_table(",")
_WITH_NEWLINE = _token_table("\n")


def write_csv(path, images, labels, rows_per_chunk=2048):
    """Write labels (N,) and images (N, P) as CSV lines ``label,p1,...,pP``, atomically."""
    table = np.column_stack([labels.astype(np.uint8), images.reshape(len(images), -1).astype(np.uint8)])
    with atomic_write(path) as f:
        for start in range(0, len(table), rows_per_chunk):
            rows = table[start:start + rows_per_chunk]
            tokens = _WITH_COMMA[rows]
            tokens[:, -1] = _WITH_NEWLINE[rows[:, -1]]
            chars = tokens.view(np.uint8).reshape(-1)
            f.write(chars[chars != 0])


# ------------------------------------------------------------ parsing CSVs

def _field_start(block, position):
    """Index of the first byte of the comma-separated field of ``block`` that holds byte ``position``."""
    return max(block.rfind(b",", 0, position), block.rfind(b"\n", 0, position)) + 1


def _field_text(block, position):
    """The text of the comma-separated field of ``block`` that holds byte ``position``."""
    start = _field_start(block, position)
    ends = [i for i in (block.find(b",", position), block.find(b"\n", position)) if i >= 0]
    text = block[start:min(ends) if ends else len(block)]
    return text.decode("utf-8", "replace")[:40]


def _describe_bad_field(text):
    """Why a field that is not plain ASCII digits was refused: the first reason that fits.

    Whitespace is named before anything else: " 3" is a stray space, not a bad value.
    """
    if any(character.isspace() for character in text):
        return f"stray whitespace in {text!r} (write plain digits between commas)"
    if not text.isascii():
        return f"{text!r} holds characters other than the digits 0-9"
    if text[:1] in ("-", "+") and text[1:].isdigit():
        if text[0] == "-":
            return f"negative value {text} (values are 0-255)"
        return f"{text!r} has a plus sign (write plain digits)"
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return f"quoted value {text} (write plain digits, without quotes)"
    try:
        value = float(text)
    except ValueError:
        return f"{text!r} is not a number"
    if not np.isfinite(value):
        return f"{text!r} is not a number"
    return f"{text!r} is not an integer (pixels are whole numbers 0-255)"


def _parse_block(block, first_line, path, n_columns):
    """Parse complete lines (each ending with a newline) into a (lines, n_columns) uint16 array.

    The fast path works on whole arrays of bytes and handles the common case of
    well-formed lines with values of at most 3 digits; anything else goes to
    _diagnose_block, which either finds the error or parses the odd values.
    """
    a = np.frombuffer(block, np.uint8)
    digits = a - np.uint8(48)
    is_digit = digits < 10
    is_newline = a == 10
    is_separator = is_newline | (a == 44)
    # padded[k + 3] is the value of byte k if it is a digit, else 0; so the last,
    # second-last and third-last digit of a field ending at separator e sit at
    # padded[e + 2], padded[e + 1] and padded[e]; hundreds[e] counts only when the
    # byte after it is a digit too, i.e. when the field has three digits.
    padded = np.zeros(len(a) + 3, np.uint8)
    np.multiply(digits, is_digit, out=padded[3:])
    hundreds = np.zeros_like(padded)
    np.multiply(padded[3:-1], is_digit[1:], out=hundreds[3:-1])
    ends = np.nonzero(is_separator)[0]
    n_lines = len(ends) // n_columns
    well_formed = (
        (is_digit | is_separator).all()
        and not is_separator[0]
        and not (is_separator[:-1] & is_separator[1:]).any()  # an empty value
        and not (is_digit[:-3] & is_digit[1:-2] & is_digit[2:-1] & is_digit[3:]).any()  # 4+ digits
        and len(ends) == n_lines * n_columns
        and np.count_nonzero(is_newline) == n_lines
        and is_newline[ends[n_columns - 1::n_columns]].all()
    )
    if not well_formed:
        return _diagnose_block(block, first_line, path, n_columns)
    # Each digit is widened to uint16 before it is multiplied: with NumPy 1.x's value-based
    # casting, a uint8 array times np.uint16(100) stays uint8 and 3 * 100 wraps to 44.
    values = np.take(padded[2:], ends).astype(np.uint16)
    values += np.take(padded[1:], ends).astype(np.uint16) * np.uint16(10)
    values += np.take(hundreds, ends).astype(np.uint16) * np.uint16(100)
    return values.reshape(n_lines, n_columns)


def _diagnose_block(block, first_line, path, n_columns):
    """The slow, careful parse of a block the fast path refused: raises DataError
    for the first problem (with its line), or returns the values when the block
    is only unusual (values with leading zeros, such as 0007)."""
    a = np.frombuffer(block, np.uint8)
    is_newline = a == 10
    is_separator = is_newline | (a == 44)
    valid = (a - np.uint8(48) < 10) | is_separator
    if not valid.all():
        position = int(np.argmin(valid))
        line = first_line + int(np.count_nonzero(is_newline[:position]))
        text = _field_text(block, position)
        reason = _describe_bad_field(text)
        first_in_line = _field_start(block, position) == block.rfind(b"\n", 0, position) + 1
        if line > 1 and first_in_line and any(c.isalpha() for c in text):
            reason += " (a header or text in the middle of the data?)"
        raise DataError(f"{path}, line {line}: {reason}")
    ends = np.flatnonzero(is_separator)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts
    line_ends = np.flatnonzero(is_newline[ends])
    fields_per_line = np.diff(line_ends, prepend=-1)
    wrong = np.flatnonzero(fields_per_line != n_columns)
    if len(wrong):
        i = int(wrong[0])
        if fields_per_line[i] == 1 and lengths[line_ends[i]] == 0:
            raise DataError(f"{path}, line {first_line + i}: empty line")
        raise DataError(f"{path}, line {first_line + i}: {count(int(fields_per_line[i]), 'value')}, expected {n_columns} "
                        f"(a label and {n_columns - 1} pixels)")
    if not lengths.all():
        field = int(np.argmin(lengths))
        raise DataError(f"{path}, line {first_line + field // n_columns}, column {field % n_columns + 1}: empty value")
    values = np.array([min(int(block[s:e]), 65535) for s, e in zip(starts.tolist(), ends.tolist())], np.uint16)
    return values.reshape(-1, n_columns)


def _check_ranges(table, first_line, path):
    """Labels 0-9 and pixels 0-255 in a (lines, 1 + P) table, or DataError for the first line that is not."""
    bad_labels = np.flatnonzero(table[:, 0] >= N_CLASSES)
    if len(bad_labels):
        i = int(bad_labels[0])
        raise DataError(f"{path}, line {first_line + i}: label {table[i, 0]} outside 0-9")
    bad = np.argwhere(table[:, 1:] > 255)
    if len(bad):
        i, column = (int(v) for v in bad[0])
        raise DataError(f"{path}, line {first_line + i}, column {column + 2}: pixel {table[i, column + 1]} outside 0-255")


def _is_header(line):
    """True for a first line that is a header (``label,1x1,...``): its first field is a word."""
    first_field = line.split(b",")[0].strip()
    return not first_field.isdigit() and any(65 <= c <= 90 or 97 <= c <= 122 for c in first_field)


def parse_csv(path, n_pixels=N_PIXELS):
    """(images (N, n_pixels) uint8, labels (N,) uint8) from an MNIST CSV file, fully checked.

    Raises DataError naming the file and the line for: a missing or empty file, a
    line without exactly 1 + n_pixels values, an empty or non-integer value, a
    label outside 0-9, a pixel outside 0-255.
    """
    n_columns = n_pixels + 1
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror})") from None
    tables = []
    line = 1
    with f:
        pending = f.read(CHUNK_BYTES)
        if pending.startswith(b"\xef\xbb\xbf"):
            pending = pending[3:]
        if not pending.strip():
            raise DataError(f"{path}: file is empty")
        first_end = pending.find(b"\n")
        first_line = pending if first_end < 0 else pending[:first_end]
        if _is_header(first_line):
            n_header = first_line.count(b",") + 1
            if n_header != n_columns:
                raise DataError(f"{path}, line 1: header has {count(n_header, 'column')}, expected {n_columns} "
                                f"(a label and {n_pixels} pixels)")
            pending = b"" if first_end < 0 else pending[first_end + 1:]
            line = 2
        at_end = False
        while not at_end:
            more = f.read(CHUNK_BYTES)
            at_end = not more
            pending += more
            if at_end:
                pending = pending.rstrip(b"\r\n")
                if not pending:
                    break
                pending += b"\n"
            cut = pending.rfind(b"\n") + 1
            if cut == 0:
                continue
            block, pending = pending[:cut], pending[cut:]
            if b"\r" in block:
                block = block.replace(b"\r\n", b"\n")
            table = _parse_block(block, line, path, n_columns)
            _check_ranges(table, line, path)
            tables.append(table.astype(np.uint8))
            line += len(table)
    if not tables:
        raise DataError(f"{path}: no data lines, only a header")
    table = np.concatenate(tables) if len(tables) > 1 else tables[0]
    return np.ascontiguousarray(table[:, 1:]), np.ascontiguousarray(table[:, 0])


# ------------------------------------------------------------ the cache

def cache_path_for(csv_path):
    """Where the parsed arrays of csv_path are cached: beside it, ``NAME.csv.cache.npz``."""
    return Path(f"{csv_path}.cache.npz")


def _source_key(csv_path):
    """What identifies a version of the CSV, as text: its device, inode, size, mtime and ctime (ns).

    The ctime (the inode's change time) is set by the kernel on every write and
    on every utime() call, and no call sets it back: so an edit that keeps the
    size and restores the mtime (cp -p, rsync -a, tar x, os.utime) still changes
    the key, and so does a file replaced by another (a new inode).
    """
    stat = os.stat(csv_path)
    return (f"v{CACHE_VERSION} device={stat.st_dev} inode={stat.st_ino} size={stat.st_size} "
            f"mtime_ns={stat.st_mtime_ns} ctime_ns={stat.st_ctime_ns}")


def _crc32_of_file(path):
    """CRC-32 of a file's whole content (about 0.06 s for the 110 MB training CSV)."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            crc = zlib.crc32(chunk, crc)
    return crc


def _read_cache(cache_path, key, n_pixels):
    """(images, labels, crc32, keyed_ns) from the cache if it is intact and was made
    from the CSV version ``key``, else None. crc32 is the CSV's CRC-32 taken when the
    cache was made, keyed_ns the clock just before it (see _is_racy)."""
    try:
        with np.load(cache_path, allow_pickle=False) as archive:
            if str(archive["source"]) != key:
                return None
            images, labels = archive["images"], archive["labels"]
            crc, keyed_ns = int(archive["source_crc32"]), int(archive["source_keyed_ns"])
    except Exception:  # missing, truncated or corrupt (zip CRCs are checked on read): rebuild
        return None
    if (images.dtype != np.uint8 or labels.dtype != np.uint8 or images.ndim != 2
            or images.shape != (len(labels), n_pixels) or labels.max(initial=0) >= N_CLASSES):
        return None
    return images, labels, crc, keyed_ns


def _is_racy(csv_path, keyed_ns):
    """True if the CSV changed less than RACY_WINDOW_NS before keyed_ns.

    Timestamps can be coarse (FAT: 2 s, ext3: 1 s): an edit made within the
    same tick as the version that was keyed can keep the whole key (same size,
    inode, mtime and ctime). Such a key is not trusted alone: the CRC-32 is checked.
    The change time is the kernel's clock at the last change, which no tool sets
    back or ahead (unlike the mtime, which `touch -d 2030-01-01` puts in the future).
    """
    return keyed_ns - os.stat(csv_path).st_ctime_ns < RACY_WINDOW_NS


def _write_cache(cache_path, images, labels, key, crc, keyed_ns):
    """Write the cache atomically; a folder that cannot be written just goes uncached."""
    try:
        with atomic_write(cache_path) as f:
            np.savez(f, images=images, labels=labels, source=np.array(key),
                     source_crc32=np.array(crc, np.int64), source_keyed_ns=np.array(keyed_ns, np.int64))
    except OSError:
        pass  # a read-only data folder: correct, only slower next time


def load_csv(csv_path, n_pixels=N_PIXELS, use_cache=True):
    """(images, labels, from_cache) for an MNIST CSV, parsing it only when its cache is stale.

    The cache (see cache_path_for) records the CSV's identity (_source_key) and
    a CRC-32 of its content. A cache whose key differs, or that is truncated or
    corrupt, is ignored and rewritten; a key made within RACY_WINDOW_NS of the
    CSV's last change is trusted only after its CRC-32 matches, and then
    re-keyed so that later loads skip the CRC (about 0.06 s on the 110 MB file).
    use_cache=False reads and writes no cache at all.
    """
    if not os.path.isfile(csv_path):
        raise DataError(f"{csv_path}: file not found")
    key = _source_key(csv_path)
    cache_path = cache_path_for(csv_path)
    if use_cache:
        cached = _read_cache(cache_path, key, n_pixels)
        if cached is not None:
            images, labels, crc, keyed_ns = cached
            if not _is_racy(csv_path, keyed_ns):
                return images, labels, True
            checked_ns = time.time_ns()
            if _crc32_of_file(csv_path) == crc:
                if not _is_racy(csv_path, checked_ns):
                    _write_cache(cache_path, images, labels, key, crc, checked_ns)
                return images, labels, True
        keyed_ns = time.time_ns()
        crc = _crc32_of_file(csv_path)  # before parsing: an edit during the parse then shows as a mismatch
    images, labels = parse_csv(csv_path, n_pixels)
    if use_cache and _source_key(csv_path) == key:
        _write_cache(cache_path, images, labels, key, crc, keyed_ns)
    return images, labels, False


# ------------------------------------------------------------ MNIST, end to end

def csv_path(data_dir, split):
    """The CSV of a split ("train" or "test") in data_dir: mnist_train.csv, mnist_test.csv."""
    return Path(data_dir) / f"mnist_{split}.csv"


def build_csv_from_idx(split, idx_dir, destination):
    """Write the CSV of a split from the IDX files in idx_dir, after checking them
    against idx_dir/SHA256SUMS, or, when idx_dir has none, against the official MNIST
    checksums that the project keeps (datasets/SHA256SUMS). Returns the number of
    images written."""
    idx_dir = Path(idx_dir)
    images_name, labels_name = IDX_FILES[split]
    own_checksums = idx_dir / "SHA256SUMS"
    checksums = read_checksums(own_checksums if own_checksums.exists() else MNIST_CHECKSUMS)
    images, labels = read_idx_pair(idx_dir / images_name, idx_dir / labels_name, checksums)
    try:
        write_csv(destination, images, labels)
    except OSError as error:
        raise DataError(f"{destination}: cannot write ({error.strerror})") from None
    return len(labels)


def load_mnist(data_dir, idx_dirs, log=print):
    """{"train": (images, labels), "test": (images, labels)} from the CSVs in data_dir.

    A missing CSV is first written from the MNIST IDX files, taken from the first
    folder of idx_dirs that holds them; log() tells the user what happens.
    """
    splits = {}
    for split in ("train", "test"):
        path = csv_path(data_dir, split)
        if not path.exists():
            sources = [Path(d) for d in idx_dirs if all((Path(d) / name).exists() for name in IDX_FILES[split])]
            if not sources:
                raise DataError(f"{path}: file not found, and no MNIST IDX files ({IDX_FILES[split][0]}) "
                                f"to write it from in {', '.join(str(d) for d in idx_dirs)}")
            log(f"{path} not found: writing it once from {sources[0] / IDX_FILES[split][0]} "
                f"and {IDX_FILES[split][1]} ...")
            n = build_csv_from_idx(split, sources[0], path)
            log(f"  wrote {count(n, 'image')} to {path}")
        images, labels, _ = load_csv(path)
        splits[split] = (images, labels)
    return splits


# ------------------------------------------------------------------ the data of a run

def prepare_data(args, config, say):
    """((train images, labels), {"test": (...), "val": (...)}): the MNIST CSVs of --data
    (written from the IDX files first if missing), cut down for --dry-run, with the
    validation split held out of the training set when one is asked for."""
    splits = load_mnist(args.data, [args.data, PROJECT_DATASETS], log=say)
    train_set, test_set = splits["train"], splits["test"]
    if args.dry_run:
        train_set = (train_set[0][:DRY_RUN_TRAIN_IMAGES], train_set[1][:DRY_RUN_TRAIN_IMAGES])
        test_set = (test_set[0][:DRY_RUN_TEST_IMAGES], test_set[1][:DRY_RUN_TEST_IMAGES])
    eval_sets = {"test": test_set}
    if config["val_split"] > 0:
        train_set, eval_sets["val"] = split_validation(*train_set, config["val_split"],
                                                       np.random.default_rng([config["seed"], 1]))
    n_train = len(train_set[1])
    if config["batch_size"] > n_train and "val" in eval_sets:
        raise UsageError(f"--val-split {config['val_split']} leaves too few training images for one batch of "
                         f"{config['batch_size']}: {count(n_train, 'image')} for training, "
                         f"{count(len(eval_sets['val'][1]), 'image')} for validation")
    if config["batch_size"] > n_train:
        raise UsageError(f"--batch-size {config['batch_size']} is larger than the {count(n_train, 'training image')}")
    return train_set, eval_sets


def split_validation(images, labels, fraction, rng):
    """((train images, labels), (validation images, labels)): a random `fraction` held out."""
    n_val = int(round(len(labels) * fraction))
    if n_val == 0:
        raise UsageError(f"--val-split {fraction} holds out no image of the {len(labels)} training images")
    order = rng.permutation(len(labels))
    held, kept = np.sort(order[:n_val]), np.sort(order[n_val:])
    return (images[kept], labels[kept]), (images[held], labels[held])

"""Reading MNIST: IDX files, CSV files (good, odd and bad), the cache, and fuzzing."""

import gzip
import hashlib
import os
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import data
from app.data import DataError


def write(tmp_path, text, name="d.csv"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


GOOD = "5,0,255,7,10\n0,1,2,3,4\n9,9,9,9,9\n"  # three rows of a label and 4 pixels




def test_parse_good_csv(tmp_path):
    images, labels = data.parse_csv(write(tmp_path, GOOD), n_pixels=4)
    assert images.dtype == np.uint8 and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, [5, 0, 9])
    np.testing.assert_array_equal(images, [[0, 255, 7, 10], [1, 2, 3, 4], [9, 9, 9, 9]])


@pytest.mark.parametrize("text", [
    "label,1x1,1x2,1x3,1x4\n" + GOOD,             # the common header
    GOOD.replace("\n", "\r\n"),                   # Windows line endings
    "\ufeff" + GOOD,                              # UTF-8 byte-order mark
    "\ufefflabel,a,b,c,d\r\n" + GOOD.replace("\n", "\r\n"),
    GOOD.rstrip("\n"),                            # no newline after the last line
    GOOD + "\n\n",                                # blank lines at the very end
    GOOD.replace("0,1,2,3,4", "00,001,2,03,4"),   # leading zeros
])
def test_variants_that_simply_work(tmp_path, text):
    images, labels = data.parse_csv(write(tmp_path, text), n_pixels=4)
    np.testing.assert_array_equal(labels, [5, 0, 9])
    np.testing.assert_array_equal(images[1], [1, 2, 3, 4])


@pytest.mark.parametrize("text, message", [
    ("", "file is empty"),
    ("\n\n", "file is empty"),
    ("label,a,b,c,d\n", "no data lines"),
    ("5,0,255,7\n", "line 1: 4 values, expected 5"),
    (GOOD + "1,2,3\n", "line 4: 3 values, expected 5"),
    (GOOD + "1,2,3", "line 4: 3 values, expected 5"),            # a truncated last line
    ("5,0,255,7,10,11\n", "line 1: 6 values, expected 5"),
    ("12,0,0,0,0\n", "line 1: label 12 outside 0-9"),
    (GOOD + "1,0,256,0,0\n", "line 4, column 3: pixel 256 outside 0-255"),
    ("1,0,1000,0,0\n", "line 1, column 3: pixel 1000 outside 0-255"),
    ("1,0,99999999,0,0\n", "pixel 65535 outside 0-255"),
    ("1,0,-3,0,0\n", "line 1: negative value -3 "),
    ("1,0,+3,0,0\n", "line 1: '\\+3' has a plus sign"),
    ('1,0,"3",0,0\n', "line 1: quoted value \"3\""),
    ("1,0,nan,0,0\n", "line 1: 'nan' is not a number"),
    ("1,0,1_0,0,0\n", "line 1: '1_0' is not an integer"),
    ("1,0,\u0663,0,0\n", "line 1: '\u0663' holds characters other than the digits"),  # Arabic-Indic 3
    ("1,0,0.5,0,0\n", "line 1: '0.5' is not an integer"),
    ("1,0,abc,0,0\n", "line 1: 'abc' is not a number"),
    (GOOD + "label,a,b,c,d\n", "line 4: 'label' is not a number .a header or text in the middle"),
    ("1,0,,0,0\n", "line 1, column 3: empty value"),
    ("1,0, 3,0,0\n", "line 1: stray whitespace in ' 3'"),
    ("1,0,3 ,0,0\n", "line 1: stray whitespace in '3 '"),
    ("1,0,3\t4,0\n", r"line 1: stray whitespace in '3\\t4'"),
    ("5,0,255,7,10\n\n0,1,2,3,4\n", "line 2: empty line"),
    ("label,a,b\n" + GOOD, "line 1: header has 3 columns, expected 5"),
    ("label\n" + GOOD, "line 1: header has 1 column, expected 5"),  # said "1 columns"
    ("5\n", "line 1: 1 value, expected 5"),  # said "1 values"
    ("5,0,255,7,10\r0,1,2,3,4\n", r"line 1: stray whitespace in '10\\r0'"),
    (b"5,0,\xff\xfe,7,10\n", "line 1: .* holds characters other than the digits 0-9"),
])
def test_bad_csv_names_file_line_and_problem(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=message) as error:
        data.parse_csv(path, n_pixels=4)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        data.parse_csv(tmp_path / "nope.csv")


def test_chunk_boundaries_do_not_change_values_or_line_numbers(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    table = rng.integers(0, 256, size=(300, 5))
    table[:, 0] %= 10
    text = "\n".join(",".join(map(str, row)) for row in table) + "\n"
    path = write(tmp_path, text)
    monkeypatch.setattr(data, "CHUNK_BYTES", 37)
    images, labels = data.parse_csv(path, n_pixels=4)
    np.testing.assert_array_equal(labels, table[:, 0])
    np.testing.assert_array_equal(images, table[:, 1:])
    write(tmp_path, text + "1,2,300,4,5\n")
    with pytest.raises(DataError, match="line 301, column 3: pixel 300"):
        data.parse_csv(path, n_pixels=4)


def test_write_csv_then_parse_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(50, 784), dtype=np.uint8)
    labels = rng.integers(0, 10, size=50, dtype=np.uint8)
    path = tmp_path / "out.csv"
    data.write_csv(path, images, labels, rows_per_chunk=7)
    first = path.read_text().splitlines()[0].split(",")
    assert len(first) == 785 and first[0] == str(labels[0]) and first[1:] == [str(v) for v in images[0]]
    parsed_images, parsed_labels = data.parse_csv(path)
    np.testing.assert_array_equal(parsed_images, images)
    np.testing.assert_array_equal(parsed_labels, labels)
    assert np.array_equal(np.loadtxt(path, delimiter=",", dtype=np.int64)[:, 1:], images)


# ----------------------------------------------------------------- the cache

def test_cache_is_used_and_rebuilt_when_the_csv_changes(tmp_path):
    path = write(tmp_path, GOOD)
    _, labels, from_cache = data.load_csv(path, n_pixels=4)
    assert not from_cache and data.cache_path_for(path).exists()
    _, labels, from_cache = data.load_csv(path, n_pixels=4)
    assert from_cache and labels.tolist() == [5, 0, 9]
    time.sleep(0.01)
    write(tmp_path, GOOD.replace("9,9", "7,9", 1))
    _, labels, from_cache = data.load_csv(path, n_pixels=4)
    assert not from_cache and labels.tolist() == [5, 0, 7]


def test_cache_sees_an_edit_that_keeps_the_size_and_restores_the_mtime(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "RACY_WINDOW_NS", 0)  # no CRC check: the key alone must see the edit
    path = write(tmp_path, GOOD)
    data.load_csv(path, n_pixels=4)
    before = os.stat(path)
    time.sleep(0.01)
    path.write_bytes(GOOD.replace("9,9", "7,9", 1).encode())  # same size, as cp -p, rsync -a or tar x leave it
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_size == before.st_size and os.stat(path).st_mtime_ns == before.st_mtime_ns
    _, labels, from_cache = data.load_csv(path, n_pixels=4)
    assert not from_cache and labels.tolist() == [5, 0, 7]


def test_cache_sees_an_edit_that_coarse_timestamps_hide(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_source_key", lambda csv_path: "a filesystem whose timestamps did not move")
    path = write(tmp_path, GOOD)
    data.load_csv(path, n_pixels=4)
    path.write_bytes(GOOD.replace("9,9", "7,9", 1).encode())  # within the same tick: the key is unchanged
    _, labels, from_cache = data.load_csv(path, n_pixels=4)
    assert not from_cache and labels.tolist() == [5, 0, 7]


def test_a_recent_cache_is_checked_once_then_trusted(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "RACY_WINDOW_NS", 200_000_000)
    path = write(tmp_path, GOOD)
    data.load_csv(path, n_pixels=4)
    time.sleep(0.3)
    assert data.load_csv(path, n_pixels=4)[2]  # checked by CRC-32, then re-keyed
    monkeypatch.setattr(data, "_crc32_of_file", lambda csv_path: pytest.fail("the CSV was read again"))
    assert data.load_csv(path, n_pixels=4)[2]


def test_no_cache_without_use_cache(tmp_path):
    path = write(tmp_path, GOOD)
    _, labels, from_cache = data.load_csv(path, n_pixels=4, use_cache=False)
    assert not from_cache and labels.tolist() == [5, 0, 9]
    assert [p.name for p in tmp_path.iterdir()] == ["d.csv"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_damaged_cache_is_detected_and_rebuilt(tmp_path, damage):
    rng = np.random.default_rng(2)
    table = rng.integers(0, 10, size=(200, 5))
    path = write(tmp_path, "\n".join(",".join(map(str, r)) for r in table) + "\n")
    data.load_csv(path, n_pixels=4)
    cache = data.cache_path_for(path)
    content = bytearray(cache.read_bytes())
    if damage == "truncate":
        content = content[:len(content) // 2]
    elif damage == "garbage":
        content = bytearray(b"garbage" * 10)
    else:
        content[len(content) // 2] ^= 0xFF  # one flipped byte inside the image array
    cache.write_bytes(bytes(content))
    images, labels, from_cache = data.load_csv(path, n_pixels=4)
    assert not from_cache
    np.testing.assert_array_equal(images, table[:, 1:])
    assert data.load_csv(path, n_pixels=4)[2]  # rewritten, good again


# ----------------------------------------------------------------- IDX files

def idx_bytes(array, magic_type=0x08):
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_idx_folder(folder, n=3, seed=0):
    """A tiny MNIST in IDX form: images and labels for both splits, and their SHA256SUMS."""
    rng = np.random.default_rng(seed)
    sums = []
    arrays = {}
    for split, (images_name, labels_name) in data.IDX_FILES.items():
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        arrays[split] = (images.reshape(n, 784), labels)
        for name, array in ((images_name, images), (labels_name, labels)):
            raw = idx_bytes(array)
            (folder / name).write_bytes(gzip.compress(raw))
            sums.append(f"{hashlib.sha256(raw).hexdigest()}  {name.removesuffix('.gz')}")
    (folder / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return arrays


def test_idx_to_csv(tmp_path):
    arrays = make_idx_folder(tmp_path)
    destination = tmp_path / "mnist_train.csv"
    assert data.build_csv_from_idx("train", tmp_path, destination) == 3
    images, labels = data.parse_csv(destination)
    np.testing.assert_array_equal(images, arrays["train"][0])
    np.testing.assert_array_equal(labels, arrays["train"][1])


def test_load_mnist_writes_missing_csvs_once_and_says_so(tmp_path):
    arrays = make_idx_folder(tmp_path)
    said = []
    splits = data.load_mnist(tmp_path, [tmp_path], log=said.append)
    assert any("writing it once" in line for line in said)
    np.testing.assert_array_equal(splits["test"][1], arrays["test"][1])
    said.clear()
    data.load_mnist(tmp_path, [tmp_path], log=said.append)
    assert said == []


def test_missing_csv_without_idx_files(tmp_path):
    with pytest.raises(DataError, match="mnist_train.csv: file not found, and no MNIST IDX files"):
        data.load_mnist(tmp_path, [tmp_path])


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:1] + b"\x01" + raw[2:], "not an IDX file"),
    (lambda raw: raw[:-5], "does not match its header"),
    (lambda raw: raw + b"\x00", "does not match its header"),
    (lambda raw: raw[:10], "does not match its header|header cut short"),
    (lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]), "checksum mismatch"),
])
def test_damaged_idx_files_are_refused(tmp_path, damage, message):
    make_idx_folder(tmp_path)
    path = tmp_path / data.IDX_FILES["train"][0]
    path.write_bytes(gzip.compress(damage(gzip.decompress(path.read_bytes()))))
    with pytest.raises(DataError, match=message):
        data.build_csv_from_idx("train", tmp_path, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_truncated_gzip_is_refused(tmp_path):
    make_idx_folder(tmp_path)
    path = tmp_path / data.IDX_FILES["train"][0]
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match="damaged or truncated gzip"):
        data.build_csv_from_idx("train", tmp_path, tmp_path / "out.csv")


def test_idx_files_without_sha256sums_are_checked_against_the_projects(tmp_path):
    """A folder of the real MNIST IDX files and no SHA256SUMS: the project's own
    checksums of the official files apply; a fake file there is refused by them."""
    import shutil
    for name in data.IDX_FILES["test"]:
        shutil.copyfile(data.MNIST_CHECKSUMS.parent / name, tmp_path / name)
    assert data.build_csv_from_idx("test", tmp_path, tmp_path / "mnist_test.csv") == 10000
    fake = tmp_path / "fake"
    fake.mkdir()
    make_idx_folder(fake)
    (fake / "SHA256SUMS").unlink()
    with pytest.raises(DataError, match="checksum mismatch"):
        data.build_csv_from_idx("test", fake, fake / "mnist_test.csv")


def test_real_mnist_checksums_are_carried_into_the_project():
    sums = data.read_checksums(os.path.join(os.path.dirname(os.path.dirname(data.__file__)), "datasets", "SHA256SUMS"))
    assert sums["train-images-idx3-ubyte"].startswith("ba891046")
    assert len(sums) == 4


# ----------------------------------------------------------------- fuzzing

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | st.text(alphabet="0123456789,\n\r -.ab\ufeff", max_size=200).map(str.encode))
def test_csv_reader_never_crashes(tmp_path, content):
    path = write(tmp_path, content, "fuzz.csv")
    try:
        images, labels = data.parse_csv(path, n_pixels=2)
    except DataError as error:
        assert str(error).startswith(str(path)) and "\n" not in str(error)
    else:
        assert images.shape == (len(labels), 2) and (labels < 10).all()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=64), st.booleans())
def test_idx_reader_never_crashes(tmp_path, content, compressed):
    path = tmp_path / ("fuzz.idx.gz" if compressed else "fuzz.idx")
    path.write_bytes(gzip.compress(content) if compressed and len(content) % 2 else content)
    try:
        array = data.read_idx(path)
    except DataError as error:
        assert str(error).startswith(str(path))
    else:
        assert array.dtype == np.uint8


def test_counts_in_messages_agree_with_their_number():
    from app.words import count
    assert [count(n, "image") for n in (0, 1, 2, 60000)] == ["0 images", "1 image", "2 images", "60,000 images"]

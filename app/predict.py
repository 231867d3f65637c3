#!/usr/bin/env python3
"""Read digits with a trained model: images (MNIST-style or photos) or CSV rows.

    python nn.py predict digit.png photo.jpg
    python nn.py predict --csv datasets/mnist_test.csv
    python nn.py predict --model runs/2026-11-25_031500/model_mnist.npz digit.png

An image is turned into MNIST form first, with NumPy alone: read upright (EXIF) as
grey levels, the ink measured against its local background (so a desk around the
sheet and uneven light do not matter), specks away from the digit dropped, the
strokes made as wide as MNIST's (a fine pen's widened, a broad one's narrowed), cropped to the digit, scaled into a 20x20 box and
centred by its centre of mass in 28x28, as the MNIST images were made.
"""

import functools
import os
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from app import calibration, ood
from app.words import confidence_text, count

PROJECT_DIR = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ images

MAX_PIXELS = 50_000_000  # larger images are refused from their header (a 48-megapixel phone photo passes)
# What Pillow (which comes with Matplotlib) reads: these, and any other format it knows
IMAGE_TYPES = ("PNG", "JPEG", "GIF", "WebP", "BMP", "TIFF")
GREY_WEIGHTS = np.array([0.299, 0.587, 0.114])  # the grey level of red, green and blue (ITU-R BT.601)
READ_SIDE = 1024  # longer images are reduced while read: the digit ends as 20x20 pixels anyway


def load_grey(path):
    """The image at path as grey levels in [0, 1], shape (H, W), upright, at most READ_SIDE long.

    The EXIF orientation a phone writes is applied; transparency counts as white paper, or as
    black paper when nothing drawn is darker than mid-grey (a digit exported from a dark-mode
    drawing program, white on nothing). An image of more than MAX_PIXELS is refused from its
    header, before it is decoded; a longer side than READ_SIDE is reduced by a whole factor
    while reading (a JPEG by its decoder), so a big photo costs little time and memory.
    Raises ValueError, naming the file.
    """
    picture = _read_upright(path)
    if picture.mode in ("I", "F"):  # 16-bit PNGs arrive as "I", read to 0-65535
        image = np.asarray(picture, dtype=np.float64) / (65535.0 if picture.mode == "I" else 1.0)
    else:
        pixels = np.asarray(picture)  # uint8
        if pixels.ndim == 3 and pixels.shape[2] == 4 and (pixels[..., 3] == 255).all():
            pixels = pixels[..., :3]  # opaque, as a browser's canvas sends it: white paper shows nowhere
        image = pixels / 255.0
    if image.ndim == 3:
        if image.shape[2] == 4:  # composite on paper: white, or black when nothing drawn is dark
            alpha = image[..., 3:]
            drawn = image[..., :3][alpha[..., 0] >= 0.5] @ GREY_WEIGHTS  # the pixels mostly opaque
            paper = 0.0 if drawn.size and drawn.min() >= 0.5 else 1.0
            image = image[..., :3] * alpha + paper * (1 - alpha)
        image = image[..., :3] @ GREY_WEIGHTS
    if image.ndim != 2:
        raise ValueError(f"{path}: not a 2-D image (shape {image.shape})")
    if min(image.shape) < 2:
        raise ValueError(f"{path}: too small to hold a digit ({image.shape[1]}x{image.shape[0]} pixels)")
    if not np.isfinite(image).all():
        raise ValueError(f"{path}: the image holds values that are not numbers")
    return np.clip(image, 0, 1)


def _read_upright(path):
    """The Pillow image at path, decoded, turned upright, reduced to READ_SIDE and in mode L, RGB,
    RGBA, I or F. Pillow comes with Matplotlib, so it is imported here, where images are read."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    # Windows opens no folder ("Permission denied"); os.path.isdir, unlike Path.is_dir, says False for a
    # path it cannot look at (a name too long), which Image.open then reports
    if isinstance(path, (str, Path)) and os.path.isdir(path):
        raise ValueError(f"{path}: a folder, not an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below is lower
            picture = Image.open(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except Image.DecompressionBombError:
        raise ValueError(f"{path}: more than {MAX_PIXELS // 10**6} megapixels, the limit; "
                         f"scale it down first") from None
    except UnidentifiedImageError:  # its own text names the path again: "cannot identify image file 'x.png'"
        if isinstance(path, (str, Path)) and Path(path).stat().st_size == 0:
            raise ValueError(f"{path}: an empty file, not an image") from None
        raise ValueError(f"{path}: cannot read it as an image (not {', '.join(IMAGE_TYPES)} or another "
                         f"format that Pillow reads)") from None
    except OSError as error:  # the system's (PermissionError, say) names the path again: its strerror does not
        reason = error.strerror if error.filename is not None else error
        raise ValueError(f"{path}: cannot read it as an image ({reason})") from None
    except Exception as error:  # Pillow raises many kinds for unreadable files
        raise ValueError(f"{path}: cannot read it as an image ({error})") from None
    with picture:
        width, height = picture.size
        if width * height > MAX_PIXELS:
            raise ValueError(f"{path}: {width}x{height} pixels is more than {MAX_PIXELS // 10**6} "
                             f"megapixels, the limit; scale it down first")
        try:
            picture.draft("L", (READ_SIDE, READ_SIDE))  # a JPEG decodes at 1/2, 1/4 or 1/8 size
            picture = ImageOps.exif_transpose(picture)
            if "A" in picture.getbands() or "transparency" in picture.info:
                picture = picture.convert("RGBA")
            elif picture.mode.startswith("I"):
                picture = picture.convert("I")
            elif picture.mode not in ("L", "RGB", "F"):
                picture = picture.convert("RGB")
            factor = -(-max(picture.size) // READ_SIDE)
            return picture.reduce(factor) if factor > 1 else picture.copy()
        except Exception as error:
            raise ValueError(f"{path}: cannot read it as an image ({error})") from None


@functools.lru_cache(maxsize=64)
def _area_weights(n_in, n_out):
    """(first, weights) for an area-averaging resize of n_in cells to n_out: output cell o is
    the sum over k of weights[k, o] times input cell first[o] + k, the share of o that input
    cell covers. first (n_out,) int; weights (K, n_out), K the most input cells one output
    cell touches (2 or 3 for 280 -> 256), zero where it touches fewer; read-only, kept for the
    next image of the same size (the page's canvas is always 280x280)."""
    edges = np.linspace(0, n_in, n_out + 1)
    first = np.minimum(np.floor(edges[:-1]).astype(np.int64), n_in - 1)
    span = int(np.max(np.ceil(edges[1:]) - first))
    cells = first + np.arange(span)[:, None]  # (K, n_out): the input cells of each output cell
    weights = np.clip(np.minimum(edges[1:], cells + 1) - np.maximum(edges[:-1], cells), 0, None)
    weights /= weights.sum(axis=0)
    first.flags.writeable = weights.flags.writeable = False
    return first, weights


def resize(image, height, width):
    """Area-averaging resize of a 2-D array to (height, width): each output pixel is the mean
    of the input it covers, whole pixels and parts of pixels weighted by their share. Done
    along columns, then along rows, as a few weighted sums of shifted rows (a dense
    (height, H) matrix would be mostly zeros)."""
    def along_rows(image, n_out):  # (n_in, w) -> (n_out, w)
        first, weights = _area_weights(image.shape[0], n_out)
        last = image.shape[0] - 1
        return sum(weights[k, :, None] * image[np.minimum(first + k, last)] for k in range(len(weights)))
    return along_rows(along_rows(image, height).T, width).T


WORK_SIDE = 256  # the digit is looked for at this size at most (it ends as 20x20 pixels)
BLANK_CONTRAST = 0.05  # less ink contrast than this is an empty page
INK_FLOOR = 0.25  # ink lighter than this fraction of the darkest is paper texture or shadow
NEAR = 0.25  # ink regions this close to the digit (times its longer side) belong to it
MIN_PART = 0.02  # a region near the digit with less ink than this share of it is a speck
THIN_ABOVE = 1.5  # strokes wider than this times MNIST_STROKE are narrowed to it (normalise_strokes)
MNIST_STROKE = 0.1  # the median stroke width of the 10,000 MNIST test digits (stroke_width), as a share of their longer side


def to_mnist(grey):
    """A (28, 28) float array in [0, 1], white digit on black, from a grey image (H, W) in [0, 1].

    28x28 images with a dark border are taken as MNIST already. Anything else, in steps:
    find_ink (the ink against its local background: a desk around the paper and uneven light
    do not matter), keep_digit (the largest connected ink region and its near neighbours:
    specks elsewhere are dropped), normalise_strokes (a fine pen's lines widened, a broad
    pen's narrowed, to MNIST's width), then crop to the digit, scale its longer side to 20
    pixels and put its centre of mass at pixel (14, 14) of 28x28, as the MNIST images were made.
    Raises ValueError("no digit found ...") for an empty image, black or white.
    """
    border = np.median(_border(grey))
    if grey.shape == (28, 28) and border < 0.5:
        if grey.max() - border <= BLANK_CONTRAST:
            raise ValueError("no digit found (the image is blank)")
        return np.clip(grey, 0, 1)
    return prepare(grey).image


class Prepared(NamedTuple):
    """What prepare finds in a picture: the input the network reads, and what it leaves out."""
    image: np.ndarray   # (28, 28) in [0, 1], white digit on black: to_mnist(grey)
    marks: int          # separate marks the size of a digit (count_marks): 2 for "42"
    stray_ink: float    # the share of the ink that keep_digit dropped as specks: most of it, for noise


def prepare(grey):
    """Prepared(to_mnist(grey), its marks, its stray ink) for a grey image (H, W) in [0, 1]:
    the network reads one digit at a time, so the callers say when there is more than one
    mark, or when most of the ink is specks around no digit (app/ood.py)."""
    border = np.median(_border(grey))
    if grey.shape == (28, 28) and border < 0.5:
        if grey.max() - border <= BLANK_CONTRAST:
            raise ValueError("no digit found (the image is blank)")
        ink = np.where(grey > border + INK_FLOOR, grey, 0)
        return Prepared(np.clip(grey, 0, 1), count_marks(ink, *label_regions(ink > 0)), 0.0)
    ink = find_ink(grey)
    regions = label_regions(ink > 0)  # (labels, count): what keep_digit and count_marks look at
    digit = keep_digit(ink, *regions)
    stray = 1 - float(digit.sum() / ink.sum())
    return Prepared(centre_in_mnist_box(normalise_strokes(digit)), count_marks(ink, *regions), stray)


def _border(image):
    """The pixels of the outer frame of a 2-D image, as one flat array."""
    return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])


def find_ink(grey):
    """Ink in [0, 1] (1 = the darkest stroke), shape (h, w): grey (H, W) reduced to WORK_SIDE at
    most, cropped to the sheet of paper when there is one.

    Dark ink on light paper is what is darker than the local paper level: ink = 1 - grey /
    paper, the paper level from a morphological closing, so a page lit unevenly is flat. A
    sheet lying on a dark desk is found first (find_sheet) and the desk is painted over with
    the paper level. An image with a dark border and no sheet is light ink on a dark
    background, measured from the border level. Contrast under INK_FLOOR of the maximum
    is set to 0. Raises ValueError when there is no ink.
    """
    if max(grey.shape) > WORK_SIDE:
        scale = WORK_SIDE / max(grey.shape)
        grey = resize(grey, max(2, round(grey.shape[0] * scale)), max(2, round(grey.shape[1] * scale)))
    border = np.median(_border(grey))
    sheet = find_sheet(grey) if border < 0.5 else None
    if sheet is not None:
        rows, columns = np.flatnonzero(sheet.any(axis=1)), np.flatnonzero(sheet.any(axis=0))
        margin = max(2, round(0.02 * max(grey.shape)))  # the soft edge of the sheet is not ink
        inside = slice(rows[0] + margin, rows[-1] + 1 - margin), slice(columns[0] + margin, columns[-1] + 1 - margin)
        grey, sheet = grey[inside].copy(), sheet[inside]
        desk_labels, _ = label_regions(~sheet)
        desk = np.isin(desk_labels, np.unique(_border(desk_labels))) & ~sheet
        grey[desk] = np.median(grey[sheet])
    if sheet is not None or border >= 0.5:
        paper = _closing(grey, max(3, round(max(grey.shape) / 5)))
        contrast = np.maximum(paper - grey, 0)
        ink = contrast / np.maximum(paper, BLANK_CONTRAST)
    else:
        contrast = ink = np.maximum(grey - border, 0)
    if contrast.max() <= BLANK_CONTRAST:  # blank, or dark only in patches too wide for strokes (the paper's shade)
        raise ValueError("no digit found (the image is blank)" if np.ptp(grey) <= BLANK_CONTRAST else
                         "no digit found (no stroke stands out from the paper around it)")
    ink = ink / ink.max()
    ink[ink < INK_FLOOR] = 0
    return ink


def find_sheet(grey):
    """The sheet of paper in a photo with a dark border: a boolean mask (H, W), or None.

    The sheet is the largest region brighter than Otsu's threshold, if it covers a quarter
    of the image and three quarters of its own bounding box (ink on it takes little), and is
    16 pixels or more each way. A light digit drawn on a dark background is neither so large
    nor so solid.
    """
    bright = grey > otsu_threshold(grey)
    if np.count_nonzero(bright) < 0.25 * grey.size:  # too little to hold a sheet: skip the labelling
        return None
    labels, count = label_regions(bright)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    sheet = labels == sizes.argmax()
    rows, columns = np.flatnonzero(sheet.any(axis=1)), np.flatnonzero(sheet.any(axis=0))
    box_height, box_width = rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1
    if sizes.max() < 0.25 * grey.size or sizes.max() < 0.75 * box_height * box_width:
        return None
    if min(box_height, box_width) < 16:  # the crop in find_ink takes up to 5 pixels each side
        return None
    return sheet


def otsu_threshold(grey):
    """The grey level that best splits grey into two classes (Otsu, 1979): the one that maximises
    the variance between the class means, over a 256-bin histogram."""
    # the bin of a level in [0, 1] is floor(256 level), 1 in the last: np.histogram's bins,
    # counted faster (256 level is exact in floating point), in the order the pixels lie in
    # memory (ravel "K"): a count does not depend on it, and a resized image is stored by columns
    counts = np.bincount(np.minimum(grey * 256, 255).astype(np.intp).ravel(order="K"), minlength=256)
    levels = (np.arange(256) + 0.5) / 256
    below = np.cumsum(counts)
    above = grey.size - below
    mass_below = np.cumsum(counts * levels)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_below = mass_below / below
        mean_above = (mass_below[-1] - mass_below) / above
        between = below * above * (mean_below - mean_above) ** 2
    return levels[np.nanargmax(np.where(np.isfinite(between), between, -1))]


def _closing(image, size):
    """Morphological closing of a 2-D array by a size x size square: a maximum filter, then a
    minimum filter. Dark details narrower than size vanish; a smooth background is kept."""
    return _filter(_filter(image, size, np.max), size, np.min)


def _filter(image, size, reduce):
    """reduce (np.max or np.min) over the size x size window around each pixel, edges repeated;
    done along rows, then along columns (both are separable)."""
    before, after = size // 2, size - 1 - size // 2
    for axis in (0, 1):
        padding = [(0, 0), (0, 0)]
        padding[axis] = (before, after)
        windows = np.lib.stride_tricks.sliding_window_view(np.pad(image, padding, mode="edge"), size, axis=axis)
        image = reduce(windows, axis=-1)
    return image


def label_regions(mask):
    """The 8-connected regions of a boolean mask (H, W): labels (H, W) int64, 0 outside the
    mask and 1..count inside, numbered in reading order of their first pixel; and count.

    Works on runs, the horizontal stretches of mask pixels in each row: a run touches a run
    of the next row when their columns overlap or meet at a corner (8-connected). Joining
    touching runs with a union-find takes a few thousand Python steps for a photo of a digit,
    where spreading labels pixel by pixel would take as many passes as a stroke is long.
    """
    height, width = mask.shape
    padded = np.zeros((height, width + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past its end
    stride = edges.shape[1]  # width + 1: runs of different rows never meet in these flat coordinates
    edges = edges.reshape(-1)
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1  # flat, inclusive
    # Runs of the next row that touch each run: those ending at or after its start - 1 and
    # starting at or before its end + 1, a contiguous range since runs are in reading order.
    first = np.searchsorted(ends, starts + stride - 1, side="left")
    last = np.searchsorted(starts, ends + stride + 1, side="right")
    parent = list(range(len(starts)))

    def root(run):
        while parent[run] != run:
            parent[run] = parent[parent[run]]  # path halving
            run = parent[run]
        return run

    for run, (low, high) in enumerate(zip(first.tolist(), last.tolist())):
        for other in range(low, high):
            a, b = root(run), root(other)
            if a != b:
                parent[max(a, b)] = min(a, b)  # the root is the component's first run
    roots = np.array([root(run) for run in range(len(starts))], dtype=np.int64)
    # number the components in reading order of their first run, which is their root
    numbers = np.zeros(len(starts) + 1, dtype=np.int64)
    unique_roots = np.unique(roots)
    numbers[unique_roots] = np.arange(1, len(unique_roots) + 1)
    labels = np.zeros(height * stride, dtype=np.int64)
    lengths = ends - starts + 1
    run_of_pixel = np.repeat(np.arange(len(starts)), lengths)
    pixels = np.repeat(starts - np.cumsum(np.concatenate([[0], lengths[:-1]])), lengths) + np.arange(lengths.sum())
    labels[pixels] = numbers[roots[run_of_pixel]]
    return labels.reshape(height, stride)[:, :width], len(unique_roots)


def region_boxes(labels, count):
    """(top, bottom, left, right), each (count + 1,): the box around each region of labels
    (label_regions), inclusive; entry 0, the background, is left empty."""
    rows, columns = np.nonzero(labels)  # the pixels of the regions alone: a tenth of a drawing
    inside = labels[rows, columns]
    top, left = (np.full(count + 1, labels.size) for _ in range(2))
    bottom, right = (np.full(count + 1, -1) for _ in range(2))
    np.minimum.at(top, inside, rows)
    np.maximum.at(bottom, inside, rows)
    np.minimum.at(left, inside, columns)
    np.maximum.at(right, inside, columns)
    return top, bottom, left, right


def keep_digit(ink, labels, count):
    """ink (h, w) with only the digit left: the connected ink region of most ink, and every
    region that lies within NEAR times its longer side and holds at least MIN_PART of its ink
    (a broken stroke, the bar of a 5). Everything else, specks and noise, is set to 0.

    Nearness is measured from the main region alone, not from what is kept so far, so that
    a trail of specks cannot chain its way across the page. labels, count: the regions of
    ink > 0 (label_regions)."""
    if count == 1:  # one region, as most drawings are: nothing to drop
        return ink.copy()
    mass = np.bincount(labels.ravel(), weights=ink.ravel(), minlength=count + 1)
    mass[0] = 0
    top, bottom, left, right = region_boxes(labels, count)
    main = mass.argmax()
    reach = NEAR * max(bottom[main] - top[main] + 1, right[main] - left[main] + 1)
    gap = np.maximum.reduce([top - bottom[main], top[main] - bottom, left - right[main], left[main] - right])
    kept = (gap <= reach) & (mass >= MIN_PART * mass[main])
    kept[0] = False
    return np.where(kept[labels], ink, 0)


MARK_SIDE = 0.5  # a mark whose longer side is this share of the largest mark's, or more, is digit-sized
MARK_INK = 0.1   # ... and that holds this share of its ink, or more


def count_marks(ink, labels, count):
    """The number of separate marks of digit size in ink (h, w): the connected region of most
    ink, and every other beside it, its box apart from its box across the page, whose
    longer side is at least MARK_SIDE of its longer side and whose ink is at least MARK_INK
    of its ink. The parts of one written digit (the bar of a 5 above it, a broken stroke)
    lie above, below or within it, or are small; a second digit written after it is neither.
    labels, count: the regions of ink > 0 (label_regions)."""
    if count < 2:
        return count
    mass = np.bincount(labels.ravel(), weights=ink.ravel(), minlength=count + 1)
    mass[0] = 0
    top, bottom, left, right = region_boxes(labels, count)
    main = mass.argmax()
    side = np.maximum(bottom - top + 1, right - left + 1)
    apart = (left > right[main]) | (right < left[main])
    marks = apart & (side >= MARK_SIDE * side[main]) & (mass >= MARK_INK * mass[main])
    marks[0] = False
    return 1 + int(np.count_nonzero(marks))


def stroke_width(ink):
    """(stroke width, longer side) of the ink (h, w), in pixels. The width is estimated from
    the pixels of more than half the darkest ink, its area A and boundary length P, as the
    width w of the rectangle w x L with that area and boundary: w L = A, 2 (w + L) = P, so
    w = P / 4 - sqrt(P^2 / 16 - A). For a long stroke that is about 2 A / P; a shape too
    round for any rectangle (a blot) gets sqrt(A). The boundary counts the sides where an
    ink pixel meets paper or the image's edge; the side is the longer side of the box
    around those pixels."""
    mask = ink > 0.5 * ink.max()
    padded = np.pad(mask, 1)
    boundary = (np.count_nonzero(padded[1:] != padded[:-1])
                + np.count_nonzero(padded[:, 1:] != padded[:, :-1]))
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    side = max(rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1)
    area = np.count_nonzero(mask)
    discriminant = boundary ** 2 / 16 - area
    width = boundary / 4 - np.sqrt(discriminant) if discriminant >= 0 else np.sqrt(area)
    return float(width), int(side)


def normalise_strokes(ink):
    """ink (h, w) whose strokes are about MNIST_STROKE times the digit's longer side wide.

    The MNIST digits were written with thick pens, and the network learned their strokes'
    width along with their shapes. Two ways to miss it:
    - a digit written with a fine pen and scaled into 20x20 pixels becomes lines a pixel
      wide or less, which the network reads less surely (a 3-pixel pen on a 600-pixel
      photo: 9 of 10 test digits, against 10 of 10 from 6 pixels up). Dilating (a maximum
      over a round neighbourhood, see _round_filter) widens every stroke by as many pixels
      as the neighbourhood is wide, less one.
    - a digit drawn small with a broad pen (the page's pen is 20 pixels of its 280) is
      scaled up with its stroke, into a fat shape: a 7 drawn in a corner read as an 8.
      Eroding (a minimum) narrows every stroke the same way, down to MNIST's.
    Strokes from MNIST's width to THIN_ABOVE times it are left as they are."""
    width, side = stroke_width(ink)
    target = MNIST_STROKE * side
    change = int(round(target - width))
    if width < target:
        return _round_filter_near_ink(ink, change, np.maximum)
    if width > THIN_ABOVE * target:
        thinner = _round_filter_near_ink(ink, -change, np.minimum)
        return thinner if thinner.max() > 0 else ink
    return ink


def _round_filter_near_ink(ink, change, reduce):
    """_round_filter(ink, change, reduce), computed on the box around the ink alone, widened by
    as far as the filter reaches (change // 2 + 1 pixels) within the image: the paper further
    out stays paper, and a digit drawn small fills a tenth of the page."""
    rows, columns = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    reach = change // 2 + 2  # one more: the edge of the box, repeated by the padding, is paper too
    box = (slice(max(rows[0] - reach, 0), rows[-1] + 1 + reach),
           slice(max(columns[0] - reach, 0), columns[-1] + 1 + reach))
    result = np.zeros_like(ink)
    result[box] = _round_filter(ink[box], change, reduce)
    return result


def _round_filter(image, change, reduce):
    """image (h, w) with every stroke made change pixels wider (reduce=np.maximum, a dilation)
    or narrower (np.minimum, an erosion), the same in every direction.

    Each step reduces over a 3x3 neighbourhood, alternately the square and the cross (the
    square without its corners), changing a stroke by 2 pixels; an odd change ends with a
    2x2 square. A square alone, repeated, would be a large square: it changes a diagonal
    stroke by 1.4 times as much as an upright one, and eroded a small digit's curves to
    hairlines. Alternating squares and crosses grow an octagon, within 6 % of a disc."""
    for step in range(change // 2):
        padded = np.pad(image, 1, mode="edge")
        if step % 2 == 0:  # the square: over the rows above and below, then the columns either side
            rows = reduce(reduce(padded[:-2], padded[1:-1]), padded[2:])
            image = reduce(reduce(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])
        else:  # the cross: the pixel, the ones left and right, and the ones above and below
            across = reduce(reduce(padded[1:-1, :-2], padded[1:-1, 1:-1]), padded[1:-1, 2:])
            image = reduce(reduce(across, padded[:-2, 1:-1]), padded[2:, 1:-1])
    if change % 2:
        padded = np.pad(image, ((0, 1), (0, 1)), mode="edge")
        image = reduce(reduce(padded[:-1, :-1], padded[1:, :-1]), reduce(padded[:-1, 1:], padded[1:, 1:]))
    return image


def centre_in_mnist_box(ink):
    """(28, 28) in [0, 1]: ink (h, w) cropped to its non-zero pixels, scaled so that the longer
    side is 20 pixels, with its centre of mass moved to pixel (14, 14) as in MNIST."""
    rows, columns = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    ink = ink[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]
    scale = 20 / max(ink.shape)
    height, width = max(1, round(ink.shape[0] * scale)), max(1, round(ink.shape[1] * scale))
    digit = resize(ink, height, width)
    digit /= max(digit.max(), 1e-12)
    canvas = np.zeros((28, 28))
    top, left = (28 - height) // 2, (28 - width) // 2
    canvas[top:top + height, left:left + width] = digit
    # Move the centre of mass to pixel (14, 14), where it sits in the MNIST training
    # images (mean 14.00, 14.01), within the canvas.
    mass = canvas.sum()
    centre_y = (canvas.sum(axis=1) @ np.arange(28)) / mass
    centre_x = (canvas.sum(axis=0) @ np.arange(28)) / mass
    shift_y = int(np.clip(round(14 - centre_y), -top, 28 - height - top))
    shift_x = int(np.clip(round(14 - centre_x), -left, 28 - width - left))
    return np.roll(canvas, (shift_y, shift_x), axis=(0, 1))


# ------------------------------------------------------------------ the command

def describe(probabilities, top=3):
    """'7 (7: 99.2 %, 1: 0.5 %, 9: 0.2 %)' for one row of class probabilities; '>99.9 %'
    from 0.999 up, never '100.0 %', and '<0.1 %' for a runner-up above 0, never '0.0 %'
    (words.confidence_text, as misclassified.png and the page)."""
    best = np.argsort(-probabilities)[:top]
    return f"{best[0]}  (" + ", ".join(f"{d}: {confidence_text(probabilities[d])}" for d in best) + ")"


def build_parser():
    """The flags of `python nn.py predict` (nn.py reads them too, for its hint to a
    photo given to the training command). Its errors are one line, as nn.py's."""
    from app.cli import Parser
    parser = Parser(prog="nn.py predict", description="Read digits with a trained model.")
    parser.add_argument("images", nargs="*", type=Path, metavar="IMAGE",
                        help=f"image files ({', '.join(IMAGE_TYPES)} or any other format Pillow reads): "
                             "MNIST-style 28x28, or a photo or scan of a dark digit on light "
                             f"paper (turned upright by its EXIF tag; at most {MAX_PIXELS // 10**6} megapixels)")
    parser.add_argument("--csv", type=Path, metavar="FILE",
                        help="predict every row of an MNIST CSV file and print the accuracy against its labels")
    parser.add_argument("--rows", choices=("summary", "wrong", "all"), default="summary",
                        help="with --csv, also print each row read wrong, or every row (wrong ones end "
                             "with WRONG) (default: summary: the accuracy, the calibration error and how many "
                             "rows look unlike the training digits)")
    parser.add_argument("--model", type=Path, default=PROJECT_DIR / "model_mnist.npz",
                        help="the model file (default: model_mnist.npz beside nn.py)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.images and args.csv is None:
        parser.error("give at least one IMAGE or --csv FILE")
    if args.rows != "summary" and args.csv is None:
        parser.error(f"--rows {args.rows} goes with --csv FILE")

    from app.save import describe_model
    # Every input is read before anything is printed, so that each bad one gets its one
    # line, and the "Model:" line stands only above answers. The model comes first: without
    # one the CSV's rows cannot be answered, so they are not parsed (half a second for the
    # 60,000 training rows), and only what its path shows (missing, a folder) is said of it.
    model, steps_done, fitted = read_model(args.model)  # model or error line; app/ood.py's statistics or None
    readings = [(path, read_image(path)) for path in args.images]  # Prepared or error line
    if args.csv is None:
        csv_rows = None
    elif isinstance(model, str):
        csv_rows = unreadable_csv(args.csv)  # error line, or None: the rows are not read
    else:
        csv_rows = read_csv(args.csv)  # (inputs, labels) or error line
    if not isinstance(model, str):  # the answers too: a model whose sums overflow answers nothing
        answers = [read if isinstance(read, str) else probabilities_of(model, read.image.reshape(1, 784))
                   for _, read in readings]  # (1, 10) each, or error line; one image at a time, as ever
        csv_answers = probabilities_of(model, csv_rows[0]) if isinstance(csv_rows, tuple) else csv_rows
        if not all(np.isfinite(answer).all() for answer in [*answers, csv_answers] if isinstance(answer, np.ndarray)):
            model = f"{args.model}: {OUTPUTS_OVERFLOW}"
    errors = [read for read in [model, *(read for _, read in readings), csv_rows] if isinstance(read, str)]
    if isinstance(model, str) or len(errors) == len(readings) + (args.csv is not None):  # nothing to answer
        for error in errors:
            print(f"nn.py predict: error: {error}", file=sys.stderr)
        return 1
    print(describe_model(args.model, steps_done), file=sys.stderr)
    if fitted is None and (args.images or args.csv is not None):
        print(f"Note: {args.model.name} holds no statistics of its training digits (an older version's "
              f"file, or one trained on too few of some digit), so predict cannot tell what is no digit at all; train it again to have them", file=sys.stderr)
    for (path, prepared), answer in zip(readings, answers):
        if isinstance(answer, str):
            print(f"nn.py predict: error: {answer}", file=sys.stderr)
            continue
        reason = ood.verdict(fitted, prepared)
        if reason is None:
            print(f"{path}: {describe(answer[0])}")
        else:  # a softmax names some digit for anything: that is no reading
            print(f"{path}: not one digit: {reason} (the outputs still name {describe(answer[0])})")
    if isinstance(csv_answers, str):
        print(f"nn.py predict: error: {csv_answers}", file=sys.stderr)
    elif csv_answers is not None:
        unlike = ood.unlike_digits(fitted, csv_rows[0]) if fitted is not None else None
        report_csv(args.csv, csv_answers, csv_rows[1], args.rows, unlike)
    return 1 if errors else 0


OUTPUTS_OVERFLOW = "its outputs are not numbers (weights so large that its sums overflow)"  # serve.py says it too


def probabilities_of(model, inputs):
    """The model's class probabilities (N, 10) for inputs (N, 784), NaN where its sums overflow:
    finite weights as large as 1e30 pass model_file.load (main then names the model, in one line)."""
    with np.errstate(over="ignore", invalid="ignore"):  # no RuntimeWarning lines: main's one line says it
        return model.predict_proba(np.asarray(inputs, dtype=np.float32))


def read_image(path):
    """The image at path in MNIST form and what was left out (Prepared), or the one-line
    error that names it."""
    try:
        return prepare(load_grey(path))
    except ValueError as error:
        return _naming(path, error)


def read_csv(path):
    """(inputs (N, 784) float32, labels (N,)) of an MNIST CSV, or the one-line error that names it."""
    from app.data import DataError, load_csv, to_inputs
    error = unreadable_csv(path)
    if error is not None:
        return error
    try:
        images, labels, _ = load_csv(path, use_cache=False)  # no file beside the user's data
    except DataError as error:
        return _naming(path, error)
    return to_inputs(images), labels


def unreadable_csv(path):
    """The one-line error for a CSV path that is a folder or no file at all, else None: what
    can be said of it without reading it (data.load_csv calls a folder "file not found")."""
    if os.path.isdir(path):  # os.path's, not Path's: False, not an error, for a name too long to look at
        return f"{path}: a folder, not a CSV file"
    if not os.path.isfile(path):
        return f"{path}: file not found"
    return None


def _naming(path, error):
    """The error's message, starting with the path it is about (added when it does not)."""
    return str(error) if str(error).startswith(str(path)) else f"{path}: {error}"


def read_model(path):
    """(the MLP of the model file at path, its steps_done, its app/ood.py statistics or None),
    or (the one-line error that names it, None, None) when the file is missing, damaged or a
    network for other than 28x28 digits."""
    from app import model_file
    from app.model_file import ModelFileError
    if os.path.isdir(path):  # model_file.load would say "cannot read (Is a directory)"; serve's words, for --model
        return f"{path}: a folder; name the model file (--model {path / 'model_mnist.npz'})", None, None
    try:
        model, info = model_file.load(path, with_info=True)
    except ModelFileError as error:
        hint = " (train one first: python nn.py)" if str(error).endswith(": no such model file") else ""
        return f"{error}{hint}", None, None
    if model.layer_sizes[0] != 784 or model.layer_sizes[-1] != 10:  # as serve.py says it
        return f"{path}: a {model.layer_sizes} network, not one for 28x28 digits (784 in, 10 out)", None, None
    return model, info["steps_done"], ood.from_members(info["ood"])


def report_csv(path, probabilities, labels, rows, unlike=None):
    """Print the rows asked for (rows: "summary", "wrong" or "all"; a wrong one ends with WRONG),
    then the accuracy of probabilities (N, 10) against labels (N,) and how many were read wrong,
    the expected calibration error (app/calibration.py) and, with unlike (N,) bool
    (app/ood.py), how many rows look unlike the training digits."""
    wrong = probabilities.argmax(axis=1) != labels
    if rows != "summary":
        for line in np.flatnonzero(wrong) if rows == "wrong" else range(len(labels)):
            mark = "  WRONG" if wrong[line] else ""
            print(f"row {line + 1}: {describe(probabilities[line])}  label {labels[line]}{mark}")
    listing = "" if rows != "summary" or not wrong.any() else "; --rows wrong lists them"
    print(f"{path}: {count(len(labels), 'row')}, accuracy against their labels {100 * (1 - wrong.mean()):.2f} % "
          f"({wrong.sum()} read wrong{listing})")
    ece = calibration.expected_calibration_error(probabilities, labels)
    print(f"{path}: expected calibration error {100 * ece:.2f} % ({calibration.BINS} bins of top probability: "
          f"how far, on average, the probabilities are from the share read right)")
    if unlike is not None:
        print(f"{path}: {count(int(unlike.sum()), 'row')} unlike the digits the model learned from "
              f"({100 * unlike.mean():.2f} %)")


if __name__ == "__main__":
    sys.exit(main())

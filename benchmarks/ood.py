#!/usr/bin/env python3
"""How well "is this a digit at all?" (app/ood.py) tells digits from the rest.

    python benchmarks/ood.py [--model model_mnist.npz] [--seed 0]

Prints, for a model file that holds the statistics (any written by `python nn.py`):
  - the share of home-made non-digits flagged (target: 95 % or more): uniform and
    Gaussian noise, lines, circles, scribbles, letters and two MNIST test digits side
    by side, each made here as a picture and read through predict's own steps (an
    input is flagged when it is unlike the digits, or holds more than one mark);
  - the share of the 10,000 MNIST test digits flagged (target: 1 % or less);
  - the share of home-made clean digits flagged (target: 5 % or less): digits set in
    Matplotlib's fonts, and digits drawn as pen strokes as on the page, at several
    sizes, pen widths and slants.
Every set is drawn from --seed; each line says how many pictures it holds.
"""

import argparse
import math
import sys
from pathlib import Path

import numpy as np

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

from app import data, model_file, ood, predict  # noqa: E402

SIDE = 280  # the page's canvas
LETTERS = "ACEFHKMNPRTUVWXYacefhkmnprtuvwxy"  # letters that no one writes as a digit (no O, I, l, S, Z, B, g, q)


def _pil():
    from PIL import Image, ImageDraw, ImageFont
    return Image, ImageDraw, ImageFont


def font_paths():
    """Matplotlib's own TrueType fonts (they come with it, on every machine): sans, serif, mono."""
    import matplotlib
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    names = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerif.ttf",
             "DejaVuSerif-Bold.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSerif-Italic.ttf"]
    return [folder / name for name in names if (folder / name).exists()]


def canvas(strokes, width, rng=None, jitter=0.0, box=(40, 40, 200, 200)):
    """Grey (SIDE, SIDE), white on black as the page draws: strokes (lists of unit-box points)
    drawn with a round pen `width` pixels wide into box (left, top, size_x, size_y)."""
    Image, ImageDraw, _ = _pil()
    picture = Image.new("L", (SIDE, SIDE), 0)
    pen = ImageDraw.Draw(picture)
    left, top, size_x, size_y = box
    for stroke in strokes:
        points = [(left + size_x * (x + (rng.normal(0, jitter) if rng is not None else 0)),
                   top + size_y * (y + (rng.normal(0, jitter) if rng is not None else 0))) for x, y in stroke]
        pen.line(points, fill=255, width=width, joint="curve")
        for x, y in (points[0], points[-1]):
            pen.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    return np.asarray(picture, dtype=np.float64) / 255


def text_picture(text, font_path, size=150):
    """Grey (SIDE, SIDE): text set in the font, dark on light paper, centred."""
    Image, ImageDraw, ImageFont = _pil()
    picture = Image.new("L", (SIDE, SIDE), 255)
    pen = ImageDraw.Draw(picture)
    font = ImageFont.truetype(str(font_path), size)
    pen.text((SIDE / 2, SIDE / 2), text, fill=0, font=font, anchor="mm")
    return np.asarray(picture, dtype=np.float64) / 255


def arc(cx, cy, rx, ry, start, end, count=24):
    return [(cx + rx * math.cos(math.radians(start + (end - start) * i / count)),
             cy + ry * math.sin(math.radians(start + (end - start) * i / count))) for i in range(count + 1)]


# The ten digits as pen strokes in a unit box (tests/test_browser.py draws the same ones).
DIGIT_STROKES = {
    0: [arc(0.5, 0.5, 0.3, 0.45, -90, 270)],
    1: [[(0.4, 0.17), (0.55, 0.05), (0.55, 0.95)]],
    2: [arc(0.5, 0.3, 0.3, 0.25, 180, 360, 16) + [(0.75, 0.45), (0.2, 0.95), (0.85, 0.95)]],
    3: [arc(0.48, 0.27, 0.28, 0.22, 200, 450, 20) + arc(0.48, 0.72, 0.3, 0.23, -90, 160, 20)],
    4: [[(0.6, 0.05), (0.15, 0.65), (0.85, 0.65)], [(0.62, 0.3), (0.62, 0.95)]],
    5: [[(0.8, 0.05), (0.3, 0.05), (0.25, 0.45)] + arc(0.5, 0.68, 0.32, 0.27, -120, 150, 20)],
    6: [[(0.7, 0.05), (0.45, 0.25)] + arc(0.5, 0.7, 0.28, 0.25, 200, 560, 28)],
    7: [[(0.15, 0.08), (0.85, 0.08), (0.4, 0.95)]],
    8: [arc(0.5, 0.27, 0.24, 0.22, 90, 450, 24), arc(0.5, 0.72, 0.3, 0.23, -90, 270, 24)],
    9: [arc(0.48, 0.3, 0.27, 0.24, 0, 360, 24) + [(0.75, 0.3), (0.7, 0.95)]],
}


def slanted(strokes, slant):
    """The strokes leaned right by `slant` (x moves by slant times the height above the middle)."""
    return [[(x + slant * (0.5 - y), y) for x, y in stroke] for stroke in strokes]


# ------------------------------------------------------------------ the sets

def non_digits(rng, n=40):
    """{name: [grey images]} of things that are not one digit."""
    sets = {}
    sets["uniform noise"] = [rng.uniform(0, 1, (SIDE, SIDE)) for _ in range(n)]
    sets["Gaussian noise"] = [np.clip(rng.normal(rng.uniform(0.2, 0.8), 0.25, (SIDE, SIDE)), 0, 1) for _ in range(n)]
    lines = []
    for _ in range(n):  # lines far from upright (an upright or slanted line is a 1), and crosses
        angle = math.radians(rng.uniform(-35, 35))
        length = rng.uniform(0.5, 0.9)
        dx, dy = 0.5 * length * math.cos(angle), 0.5 * length * math.sin(angle)
        strokes = [[(0.5 - dx, 0.5 - dy), (0.5 + dx, 0.5 + dy)]]
        if rng.random() < 0.4:
            strokes.append([(0.5 + dy, 0.5 - dx), (0.5 - dy, 0.5 + dx)])  # a cross: + or x
        lines.append(canvas(strokes, int(rng.integers(10, 30))))
    sets["lines"] = lines
    circles = []
    for i in range(n):  # filled discs, and rings inside rings (one thin ring alone is a 0)
        radius = rng.uniform(0.2, 0.45)
        if i % 2 == 0:
            circles.append(canvas([[(0.5, 0.5)]], int(2 * radius * 200)))  # a dot as wide as the disc
        else:
            strokes = [arc(0.5, 0.5, r, r, 0, 360) for r in (radius, 0.55 * radius)]
            circles.append(canvas(strokes, int(rng.integers(10, 20))))
    sets["circles"] = circles
    scribbles = []
    for _ in range(n):  # a pen wandering with many turns
        points = np.cumsum(rng.normal(0, 0.12, (int(rng.integers(20, 40)), 2)), axis=0)
        points = (points - points.min(axis=0)) / np.ptp(points, axis=0).max()
        scribbles.append(canvas([[tuple(p) for p in points]], int(rng.integers(12, 24))))
    sets["scribbles"] = scribbles
    fonts = font_paths()
    sets["letters"] = [text_picture(LETTERS[i % len(LETTERS)], fonts[i % len(fonts)]) for i in range(2 * n)]
    test_images, _, _ = data.load_csv(data.csv_path(PROJECT_DIR / "datasets", "test"))
    pairs = []
    for _ in range(n):  # two MNIST test digits side by side, a few pixels apart, white on black
        a, b = rng.choice(len(test_images), 2, replace=False)
        gap = int(rng.integers(0, 6))
        left, right = test_images[a].reshape(28, 28), test_images[b].reshape(28, 28)
        pairs.append(np.hstack([left, np.zeros((28, gap)), right]) / 255)
    sets["two digits side by side"] = pairs
    return sets


def home_made_digits(rng, n_per_digit=12):
    """{name: [(grey image, digit)]}: clean digits, set in fonts and drawn as pen strokes."""
    fonts = font_paths()
    typed = [(text_picture(str(d), font), d) for font in fonts for d in range(10)]
    drawn = []
    for d in range(10):
        for _ in range(n_per_digit):
            size = rng.uniform(110, 220)
            left, top = rng.uniform(10, SIDE - 10 - size * 0.9), rng.uniform(10, SIDE - 10 - size)
            strokes = slanted(DIGIT_STROKES[d], rng.uniform(-0.1, 0.3))
            drawn.append((canvas(strokes, int(rng.integers(14, 26)), rng, jitter=0.015,
                                 box=(left, top, size * 0.9, size)), d))
    return {"set in fonts": typed, "drawn with a pen": drawn}


def flagged(model, fitted, greys):
    """(flagged (N,) bool, read (N,) digit): an input is flagged when predict would say it is
    not one digit (app/ood.py's verdict on predict.prepare's reading); no ink at all is flagged."""
    flags, read = [], []
    for grey in greys:
        try:
            prepared = predict.prepare(grey)
        except ValueError:  # no ink at all
            flags.append(True)
            read.append(-1)
            continue
        flags.append(ood.verdict(fitted, prepared) is not None)
        read.append(int(model.predict(prepared.image.reshape(1, 784).astype(np.float32))[0]))
    return np.array(flags), np.array(read)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=PROJECT_DIR / "model_mnist.npz")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model, info = model_file.load(args.model, with_info=True)
    fitted = ood.from_members(info["ood"])
    if fitted is None:
        sys.exit(f"{args.model}: holds no statistics of the training digits (an older version's "
                 f"file): train it again with python nn.py")
    rng = np.random.default_rng(args.seed)
    print(f"Model: {args.model}; threshold {fitted['threshold']:.1f} (the pixels' negative log-likelihood)")

    total = caught = 0
    print("Non-digits flagged (target >= 95 %):")
    for name, greys in non_digits(rng).items():
        flags, _ = flagged(model, fitted, greys)
        total, caught = total + len(flags), caught + flags.sum()
        print(f"  {name:<24} {100 * flags.mean():5.1f} %  of {len(flags)}")
    print(f"  {'all':<24} {100 * caught / total:5.1f} %  of {total}")

    test_images, test_labels, _ = data.load_csv(data.csv_path(PROJECT_DIR / "datasets", "test"))
    unlike = ood.unlike_digits(fitted, data.to_inputs(test_images))
    print(f"MNIST test digits flagged (target <= 1 %): {100 * unlike.mean():.2f} % of {len(unlike):,}")

    total = caught = 0
    print("Home-made digits flagged (target <= 5 %):")
    for name, pairs in home_made_digits(rng).items():
        flags, read = flagged(model, fitted, [grey for grey, _ in pairs])
        right = (read == np.array([d for _, d in pairs])).mean()
        total, caught = total + len(flags), caught + flags.sum()
        print(f"  {name:<24} {100 * flags.mean():5.1f} %  of {len(flags)} (read right: {100 * right:.1f} %)")
    print(f"  {'all':<24} {100 * caught / total:5.1f} %  of {total}")


if __name__ == "__main__":
    main()

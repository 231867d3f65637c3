#!/usr/bin/env python3
"""Read digits with a trained model: images (MNIST-style or photos) or CSV rows.

    python nn.py predict digit.png photo.jpg
    python nn.py predict --csv datasets/mnist_test.csv
    python nn.py predict --model runs/model_mnist.npz digit.png

An image is turned into MNIST form first, with NumPy alone: grey levels, inverted
when the digit is dark on light paper, cropped to the digit, scaled into a 20x20
box and centred by its centre of mass in 28x28, as the MNIST images were made.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

PROJECT_DIR = Path(__file__).resolve().parent


# ------------------------------------------------------------------ images

def load_grey(path):
    """The image at path as grey levels in [0, 1], shape (H, W); transparency counts as white."""
    import matplotlib.image
    try:
        image = np.asarray(matplotlib.image.imread(path), dtype=np.float64)
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except Exception as error:  # matplotlib/Pillow raise many kinds for unreadable files
        raise ValueError(f"{path}: cannot read it as an image ({error})") from None
    if image.dtype.kind in "ui" or image.max(initial=0) > 1:
        image = image / 255.0
    if image.ndim == 3:
        if image.shape[2] == 4:  # composite on white paper
            alpha = image[..., 3:]
            image = image[..., :3] * alpha + (1 - alpha)
        image = image[..., :3] @ np.array([0.299, 0.587, 0.114]) if image.shape[2] >= 3 else image[..., 0]
    if image.ndim != 2 or min(image.shape) < 2:
        raise ValueError(f"{path}: not a 2-D image (shape {image.shape})")
    return image


def _area_resample_matrix(n_in, n_out):
    """(n_out, n_in) matrix whose rows average the input cells each output cell covers."""
    edges = np.linspace(0, n_in, n_out + 1)
    matrix = np.zeros((n_out, n_in))
    for out_index in range(n_out):
        start, end = edges[out_index], edges[out_index + 1]
        for in_index in range(int(np.floor(start)), min(int(np.ceil(end)), n_in)):
            matrix[out_index, in_index] = min(end, in_index + 1) - max(start, in_index)
        matrix[out_index] /= matrix[out_index].sum()
    return matrix


def resize(image, height, width):
    """Area-averaging resize of a 2-D array to (height, width)."""
    return _area_resample_matrix(image.shape[0], height) @ image @ _area_resample_matrix(image.shape[1], width).T


def to_mnist(grey):
    """A (28, 28) float array in [0, 1], white digit on black, from any grey image in [0, 1].

    28x28 images with a dark background are taken as MNIST already. Anything else:
    invert if the border is light (dark ink on paper), remove the background level
    and faint texture, crop to the ink, scale the longer side to 20 pixels, and
    paste into 28x28 with the centre of mass in the middle.
    """
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if grey.shape == (28, 28) and np.median(border) < 0.5:
        return np.clip(grey, 0, 1)
    ink = 1 - grey if np.median(border) >= 0.5 else grey.copy()
    background = np.median(np.concatenate([ink[0], ink[-1], ink[:, 0], ink[:, -1]]))
    ink = np.clip(ink - background, 0, None)
    if ink.max() <= 0.05:
        raise ValueError("no digit found (the image is blank)")
    ink /= ink.max()
    ink[ink < 0.25] = 0  # paper texture and shadows
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
    """'7 (7: 99.2 %, 1: 0.5 %, 9: 0.2 %)' for one row of class probabilities."""
    best = np.argsort(-probabilities)[:top]
    return f"{best[0]}  (" + ", ".join(f"{d}: {100 * probabilities[d]:.1f} %" for d in best) + ")"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="nn.py predict", description="Read digits with a trained model.")
    parser.add_argument("images", nargs="*", type=Path, metavar="IMAGE",
                        help="PNG or JPEG files: MNIST-style 28x28, or a photo or scan of a dark digit on light paper")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="predict every row of an MNIST CSV file")
    parser.add_argument("--model", type=Path, default=PROJECT_DIR / "model_mnist.npz",
                        help="the model file (default: model_mnist.npz beside nn.py)")
    args = parser.parse_args(argv)
    if not args.images and args.csv is None:
        parser.error("give at least one IMAGE or --csv FILE")

    from data import DataError, load_csv, to_inputs
    from mlp import MLP, ModelFileError
    try:
        model = MLP.load(args.model)
    except ModelFileError as error:
        hint = " (train one first: python nn.py)" if not args.model.exists() else ""
        print(f"nn.py predict: error: {error}{hint}", file=sys.stderr)
        return 1
    status = 0
    for path in args.images:
        try:
            image = to_mnist(load_grey(path))
        except ValueError as error:
            message = str(error) if str(error).startswith(str(path)) else f"{path}: {error}"
            print(f"nn.py predict: error: {message}", file=sys.stderr)
            status = 1
            continue
        print(f"{path}: {describe(model.predict_proba(image.reshape(1, 784).astype(np.float32))[0])}")
    if args.csv is not None:
        try:
            images, labels, _ = load_csv(args.csv)
        except DataError as error:
            print(f"nn.py predict: error: {error}", file=sys.stderr)
            return 1
        probabilities = model.predict_proba(to_inputs(images))
        for line, (row, label) in enumerate(zip(probabilities, labels), start=1):
            print(f"row {line}: {describe(row)}  label {label}")
        accuracy = np.mean(probabilities.argmax(axis=1) == labels)
        print(f"{args.csv}: {len(labels)} rows, accuracy against their labels {100 * accuracy:.2f} %")
    return status


if __name__ == "__main__":
    sys.exit(main())

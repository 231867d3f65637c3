"""Random distortions of training images, with NumPy alone: each batch a new training set.

Both functions take a batch of flattened 28x28 uint8 images (B, 784), draw one random
distortion per image from the run's generator, and return a new (B, 784) uint8 batch;
the background (0) comes in where the image moves away from an edge.
"""

import functools

import numpy as np

SIDE = 28


def random_shifts(batch_pixels, max_shift, rng):
    """Each image moved by its own random (dy, dx), |dy|, |dx| <= max_shift pixels."""
    B = len(batch_pixels)
    padded = np.pad(batch_pixels.reshape(B, SIDE, SIDE), ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (SIDE, SIDE), axis=(1, 2))
    dy, dx = rng.integers(0, 2 * max_shift + 1, size=(2, B))
    return windows[np.arange(B), dy, dx].reshape(B, SIDE * SIDE)


def random_rotations(batch_pixels, max_degrees, rng):
    """Each image turned about its centre by its own random angle in [-max_degrees, max_degrees]
    (in steps of a quarter of a degree), sampled bilinearly: every output pixel blends
    the four input pixels around the point that the inverse rotation maps it to."""
    corner, wy, wx = _rotation_maps(float(max_degrees))
    B = len(batch_pixels)
    pick = rng.integers(0, len(corner), size=B)
    side = SIDE + 2
    padded = np.pad(batch_pixels.reshape(B, SIDE, SIDE), ((0, 0), (1, 1), (1, 1))).astype(np.float32).ravel()
    index = corner[pick] + (np.arange(B) * side * side)[:, None]
    wy, wx = wy[pick], wx[pick]
    top = padded[index] * (1 - wx) + padded[index + 1] * wx
    bottom = padded[index + side] * (1 - wx) + padded[index + side + 1] * wx
    return np.rint(top * (1 - wy) + bottom * wy).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _rotation_maps(max_degrees):
    """For each angle of the grid -max_degrees..max_degrees: the flat index of the top-left
    of the four neighbours of every output pixel in a 30x30 image (the 28x28 image with a
    one-pixel zero border), and the bilinear weights wy, wx. Three arrays (angles, 784)."""
    angles = np.deg2rad(np.linspace(-max_degrees, max_degrees, max(3, int(4 * 2 * max_degrees) + 1)))[:, None]
    centre = (SIDE - 1) / 2
    y, x = (grid.ravel() - centre for grid in np.mgrid[0:SIDE, 0:SIDE])
    source_y = np.clip(np.cos(angles) * y - np.sin(angles) * x + centre + 1, 0, SIDE + 0.999)
    source_x = np.clip(np.sin(angles) * y + np.cos(angles) * x + centre + 1, 0, SIDE + 0.999)
    y0, x0 = np.floor(source_y).astype(np.intp), np.floor(source_x).astype(np.intp)
    return y0 * (SIDE + 2) + x0, (source_y - y0).astype(np.float32), (source_x - x0).astype(np.float32)

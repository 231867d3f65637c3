"""Augmentation: every image its own shift and its own angle, exact shifts, rounded rotations.

The expected images are computed here independently: a shift by slicing a zero-padded copy,
a rotation by a float64 bilinear interpolation written from its definition.
"""

import numpy as np
import pytest

from augment import random_rotations, random_shifts

SIDE = 28


def digit_like_images(n, seed=0):
    """n images (n, 784) uint8 of random ink in the central 20x20, zero in a 4-pixel border
    (as MNIST's digits), so that no shift or rotation tested here moves ink off the image."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, SIDE, SIDE), np.uint8)
    images[:, 4:24, 4:24] = rng.integers(0, 256, size=(n, 20, 20))
    return images.reshape(n, SIDE * SIDE)


def shifted(image, dy, dx):
    """image (784,) moved dy pixels down and dx right, zeros coming in: (28, 28)."""
    padded = np.zeros((SIDE + 2 * 8, SIDE + 2 * 8), np.uint8)
    padded[8:8 + SIDE, 8:8 + SIDE] = image.reshape(SIDE, SIDE)
    return padded[8 - dy:8 - dy + SIDE, 8 - dx:8 - dx + SIDE]


def test_shifts_move_each_image_by_its_own_dy_and_dx():
    max_shift, B = 2, 400
    images = digit_like_images(B)
    out = random_shifts(images, max_shift, np.random.default_rng(1))
    assert out.shape == (B, SIDE * SIDE) and out.dtype == np.uint8
    offsets = range(-max_shift, max_shift + 1)
    seen = set()
    for image, result in zip(images, out.reshape(B, SIDE, SIDE)):
        matches = [(dy, dx) for dy in offsets for dx in offsets if np.array_equal(result, shifted(image, dy, dx))]
        assert len(matches) == 1, "each output is its input shifted by one (dy, dx) within max_shift"
        seen.add(matches[0])
    # All 25 pairs, so dy and dx are drawn apart (not dx = dy, not dx = -dy): with 400 images a
    # given pair is missed with probability (24/25)^400 < 1e-7.
    assert seen == {(dy, dx) for dy in offsets for dx in offsets}


def test_no_shift_is_the_identity():
    images = digit_like_images(5)
    assert np.array_equal(random_shifts(images, 0, np.random.default_rng(0)), images)


def rotated_reference(image, degrees):
    """image (784,) turned by `degrees` about its centre, in float64: output pixel (y, x), taken
    relative to the centre (13.5, 13.5), reads the input at (cos a y - sin a x, sin a y + cos a x)
    (the inverse rotation) and blends its four neighbours bilinearly, zero outside. (28, 28)."""
    a = np.deg2rad(degrees)
    centre = (SIDE - 1) / 2
    y, x = np.mgrid[0:SIDE, 0:SIDE] - centre
    source_y = np.cos(a) * y - np.sin(a) * x + centre
    source_x = np.sin(a) * y + np.cos(a) * x + centre
    padded = np.zeros((SIDE + 16, SIDE + 16))  # a corner turned by 45 degrees lands 5.6 pixels out
    padded[8:-8, 8:-8] = image.reshape(SIDE, SIDE)
    y0, x0 = np.floor(source_y).astype(int), np.floor(source_x).astype(int)
    wy, wx = source_y - y0, source_x - x0
    y0, x0 = y0 + 8, x0 + 8  # into the padded image
    return ((1 - wy) * (1 - wx) * padded[y0, x0] + (1 - wy) * wx * padded[y0, x0 + 1]
            + wy * (1 - wx) * padded[y0 + 1, x0] + wy * wx * padded[y0 + 1, x0 + 1])


def test_rotations_turn_each_image_by_its_own_angle_and_round_the_pixels():
    max_degrees, B = 10, 12
    image = digit_like_images(1)[0]
    out = random_rotations(np.tile(image, (B, 1)), max_degrees, np.random.default_rng(2))
    assert out.shape == (B, SIDE * SIDE) and out.dtype == np.uint8
    candidates = np.arange(-4 * max_degrees, 4 * max_degrees + 1) / 4  # quarter degrees
    references = [rotated_reference(image, degrees) for degrees in candidates]
    # The code blends in float32: four products of weights rounded to float32 (relative error
    # 2 eps32 each) and pixels up to 255 err by at most 4 * 255 * 3 * 1.2e-7 < 4e-4 in all.
    # Pixels whose exact value lies within 1e-3 of a half-integer may round either way; every
    # other pixel must equal the exactly rounded value (truncation is off by one on about half).
    angles = set()
    for result in out.reshape(B, SIDE, SIDE):
        exact = [index for index, reference in enumerate(references)
                 if np.array_equal(result[decided(reference)], np.rint(reference)[decided(reference)])]
        assert exact, "each output is its input turned by some quarter-degree angle, rounded"
        angles.add(candidates[exact[0]])
    # One angle per image: 12 draws from 81 angles are all the same with probability 81^-11.
    assert len(angles) > 1


def test_rotation_angles_cover_the_whole_range():
    # max_degrees 1: the nine quarter degrees -1, -0.75, ..., 1. Among 200 images an angle is
    # missed with probability at most 9 (8/9)^200 < 1e-9.
    max_degrees, B = 1, 200
    images = digit_like_images(B, seed=4)
    out = random_rotations(images, max_degrees, np.random.default_rng(5)).reshape(B, SIDE, SIDE)
    candidates = np.arange(-4 * max_degrees, 4 * max_degrees + 1) / 4
    angles = set()
    for image, result in zip(images, out):
        for degrees in candidates:
            reference = rotated_reference(image, degrees)
            if np.array_equal(result[decided(reference)], np.rint(reference)[decided(reference)]):
                angles.add(degrees)
                break
        else:
            raise AssertionError("an output is not its input turned by a quarter-degree angle")
    assert angles == set(candidates)


def decided(reference):
    """Where float32 arithmetic cannot change which way a pixel rounds (see above)."""
    return np.abs(reference - np.floor(reference) - 0.5) > 1e-3


def test_rotation_by_zero_degrees_is_the_identity():
    images = digit_like_images(4)
    assert np.array_equal(random_rotations(images, 0, np.random.default_rng(0)), images)

"""Tests of hpsh_tf2.data.image_headers: sizes read from headers equal Pillow's, eagerly and
inside ``Dataset.map``; truncated JPEGs are told apart; the checks name batch positions."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from hpsh_tf2.data.image_headers import check_image_bytes, declared_size, jpeg_complete

FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")


def _image_bytes(fmt: str, width: int, height: int, **options) -> bytes:
    pixels = np.random.default_rng(width * height).integers(0, 255, (height, width, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("size", [(37, 21), (300, 17)])
def test_declared_size_equals_pillows(fmt, size):
    data = _image_bytes(fmt, *size)
    assert Image.open(io.BytesIO(data)).size == size
    np.testing.assert_array_equal(declared_size(tf.constant(data)).numpy(), size)
    mapped = tf.data.Dataset.from_tensor_slices([data, data]).map(declared_size)
    for got in mapped:
        np.testing.assert_array_equal(got.numpy(), size)


def test_progressive_jpeg_and_unknown_bytes():
    data = _image_bytes("JPEG", 64, 48, progressive=True)
    np.testing.assert_array_equal(declared_size(tf.constant(data)).numpy(), [64, 48])
    np.testing.assert_array_equal(declared_size(tf.constant(b"II*\0junk")).numpy(), [-1, -1])


def test_jpeg_complete_tells_truncated_files():
    data = _image_bytes("JPEG", 40, 30)
    assert bool(jpeg_complete(tf.constant(data)))
    assert not bool(jpeg_complete(tf.constant(data[: len(data) // 2])))


def test_check_image_bytes_names_the_positions():
    good = _image_bytes("PNG", 8, 8)
    big = _image_bytes("PNG", 50, 40)
    tf.group(check_image_bytes(tf.constant([good, big]), max_pixels=2000))  # 50 x 40 = 2000
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"export\.max_pixels=1999"):
        tf.group(check_image_bytes(tf.constant([good, big]), max_pixels=1999))
    with pytest.raises(tf.errors.InvalidArgumentError, match="TIFF is not supported"):
        tf.group(check_image_bytes(tf.constant([good, b"II*\0rest"]), max_pixels=10**6))

"""Image loading and decoding: Pillow on the host, TF ops in the input pipeline.

Both paths give the same 8-bit RGB pixels for the same file:

* colour modes are converted to RGB; grayscale is replicated to three channels;
* alpha is **dropped**, not composited (RGBA, LA, palette with transparency keep their colour
  values as stored, whatever the alpha);
* 16-bit single-channel samples (Pillow modes ``I;16*``, ``I``; ``I`` clipped to
  [0, 65535]) are scaled to 8 bits by ``round(v * 255 / 65535)`` (= ``round(v / 257)``), on
  both paths, 16-bit PNGs included; 16-bit *RGB* TIFFs are reduced by Pillow itself, which keeps
  the high byte (``v >> 8``, at most one level below the rounded value);
* float (``F``) images are taken as ``[0, 1]`` when every finite value lies in ``[0, 1]``
  (scaled by 255), otherwise as ``[0, 255]``; values are clipped, rounded, NaN becomes 0;
* the EXIF orientation tag is ignored (pixels as stored), multi-frame files give their first
  frame.

TensorFlow cannot decode TIFF, so :func:`decode_image` sends TIFF bytes (detected by their magic
bytes) to Pillow through ``tf.py_function``; everything else uses TF's own decoders. JPEG is
decoded with the accurate integer IDCT (TF's default, the fast one, differs from Pillow by about
one grey level on average), so JPEG pixels match Pillow's too (both bundle libjpeg-turbo).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf
from PIL import Image

from hpsh_tf2.errors import BadImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "TIFF_MAGICS",
    "decode_error",
    "decode_image",
    "first_undecodable",
    "has_image_extension",
    "image_to_rgb_array",
    "is_tiff",
    "load_image_rgb",
    "read_image",
    "resize_image",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".webp")
"""File extensions treated as images (compared case-insensitively)."""

TIFF_MAGICS: tuple[bytes, ...] = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
"""First four bytes of a TIFF file: classic TIFF and BigTIFF, little- and big-endian."""

_PNG_MAGIC = b"\x89PNG"
_JPEG_MAGIC = b"\xff\xd8\xff"
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_DIRECT_MODES = ("1", "L", "P", "PA", "LA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB")
# Pillow's integer RGB -> L conversion (ITU-R 601-2 luma), reproduced for channels=1.
_LUMA_WEIGHTS = (19595, 38470, 7471)


def is_tiff(data: bytes) -> bool:
    """Whether ``data`` (a file's bytes, or at least its first four) starts like a TIFF file."""
    return bytes(data[:4]).startswith(TIFF_MAGICS)


def has_image_extension(name: str | os.PathLike[str]) -> bool:
    """Whether a file name ends with one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return os.fspath(name).lower().endswith(IMAGE_EXTENSIONS)


def _sixteen_bit_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale 16-bit samples to 8 bits: ``round(v / 257)`` after clipping to [0, 65535]."""
    wide = np.clip(values.astype(np.int64), 0, 65535)
    return ((2 * wide + 257) // 514).astype(np.uint8)


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale a float image to 8 bits; ``[0, 1]`` data is stretched, other data clipped."""
    data = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    finite = values[np.isfinite(values)]
    if finite.size == 0 or (finite.min() >= 0.0 and finite.max() <= 1.0):
        data = data * 255.0
    return np.rint(np.clip(data, 0.0, 255.0)).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, np.newaxis], 3, axis=2)


def image_to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert an opened, loaded Pillow image to a uint8 ``[H, W, 3]`` array.

    Args:
        img: A Pillow image in any mode Pillow can decode.

    Returns:
        The RGB pixels (conversion rules in the module docstring).

    Raises:
        ValueError: If the mode cannot be converted to RGB.
    """
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        return _gray_to_rgb(_sixteen_bit_to_uint8(np.asarray(img)))
    if mode == "F":
        return _gray_to_rgb(_float_to_uint8(np.asarray(img)))
    if mode == "RGB":
        return np.array(img, dtype=np.uint8)
    if mode not in _DIRECT_MODES:
        raise ValueError(f"Received: image mode {mode!r}; expected a mode convertible to RGB")
    with warnings.catch_warnings():
        # "Palette images with Transparency ..." — we drop alpha on purpose.
        warnings.simplefilter("ignore", UserWarning)
        return np.array(img.convert("RGB"), dtype=np.uint8)


def _open_rgb(source: str | io.BytesIO, name: str) -> np.ndarray:
    try:
        with Image.open(source) as img:
            img.load()  # full decode: truncated files fail here, not later
            return image_to_rgb_array(img)
    except BadImageError:
        raise
    except (OSError, SyntaxError, ValueError, TypeError, Image.DecompressionBombError) as err:
        reason = str(err) or type(err).__name__
        raise BadImageError(name, reason) from err


def load_image_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file with Pillow and return uint8 ``[H, W, 3]`` RGB pixels.

    Handles grayscale, LA, RGBA and palette images (alpha dropped), CMYK, 1-bit, 16-bit
    (``I;16``, ``I;16B``, ``I``; scaled by 255/65535) and float (``F``) images; see the module
    docstring for the exact rules. The file is decoded completely, so a truncated file fails
    here.

    Args:
        path: Image file.

    Returns:
        ``np.ndarray`` of dtype uint8 and shape ``[H, W, 3]``.

    Raises:
        BadImageError: If the file is missing, empty, truncated or not a decodable image.
    """
    name = os.fspath(path)
    return _open_rgb(name, name)


def decode_error(path: str) -> BadImageError | None:
    """The :class:`BadImageError` of ``path`` if Pillow cannot fully decode it, else None."""
    try:
        load_image_rgb(path)
    except BadImageError as err:
        return err
    return None


def first_undecodable(
    paths: Sequence[str], *, num_workers: int | None = None, block: int = 64
) -> BadImageError | None:
    """The error of the first file in ``paths`` that Pillow cannot fully decode, or None.

    TF's image decoders name neither the file nor its position when a batch fails; this finds
    it after the fact. Files are decoded ``block`` at a time in a thread pool, in order, and
    the search stops at the first block holding a bad file.

    Args:
        paths: Image files, in the order to report them.
        num_workers: Decoding threads (default: the CPU count, at most 8).
        block: Files decoded per round.

    Returns:
        The :class:`BadImageError` of the first undecodable file, or None if all decode.
    """
    workers = num_workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(paths), block):
            for error in pool.map(decode_error, paths[start : start + block]):
                if error is not None:
                    return error
    return None


def _pillow_decode_bytes(contents: tf.Tensor) -> np.ndarray:
    data = contents.numpy()
    return _open_rgb(io.BytesIO(data), f"<{len(data)} bytes of TIFF data>")


def _decode_tiff(contents: tf.Tensor) -> tf.Tensor:
    image = tf.py_function(_pillow_decode_bytes, [contents], Tout=tf.uint8)
    image.set_shape([None, None, 3])
    return image


def _decode_png(contents: tf.Tensor) -> tf.Tensor:
    # Decode at 16 bits and round, so 16-bit PNGs scale like Pillow's path (8-bit PNGs come
    # back as v * 257 and round to v exactly).
    wide = tf.cast(tf.io.decode_png(contents, channels=3, dtype=tf.uint16), tf.int32)
    return tf.cast(tf.math.floordiv(2 * wide + 257, 514), tf.uint8)


def _decode_other(contents: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_image(contents, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _decode_jpeg(contents: tf.Tensor) -> tf.Tensor:
    # TF's default IDCT is libjpeg's fast integer one; the accurate one matches Pillow exactly.
    return tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE")


def _decode_non_tiff(contents: tf.Tensor) -> tf.Tensor:
    return tf.cond(
        _starts_with(contents, (_PNG_MAGIC,)),
        lambda: _decode_png(contents),
        lambda: tf.cond(
            _starts_with(contents, (_JPEG_MAGIC,)),
            lambda: _decode_jpeg(contents),
            lambda: _decode_other(contents),
        ),
    )


def _starts_with(contents: tf.Tensor, magics: tuple[bytes, ...]) -> tf.Tensor:
    head = tf.strings.substr(contents, 0, len(magics[0]))
    matches = [tf.equal(head, tf.constant(magic)) for magic in magics]
    return tf.reduce_any(tf.stack(matches))


def _rgb_to_luma(image: tf.Tensor) -> tf.Tensor:
    wide = tf.cast(image, tf.int32)
    weights = tf.constant(_LUMA_WEIGHTS, dtype=tf.int32)
    luma = tf.bitwise.right_shift(tf.reduce_sum(wide * weights, axis=-1, keepdims=True) + 32768, 16)
    return tf.cast(luma, tf.uint8)


def decode_image(
    contents: tf.Tensor | bytes, *, channels: int = 3, allow_tiff: bool = True
) -> tf.Tensor:
    """Decode encoded image bytes into a uint8 tensor (a graph op, usable in ``Dataset.map``).

    GIF, BMP and WebP go through ``tf.io.decode_image`` (first frame only); PNG through
    ``tf.io.decode_png`` at 16 bits, rounded to 8 bits; JPEG through ``tf.io.decode_jpeg`` with the
    accurate integer IDCT (identical to Pillow in our tests); TIFF (detected by its magic bytes
    ``II*\\0`` / ``MM\\0*``) through Pillow inside ``tf.py_function``, so TIFF decoding needs a
    Python runtime (no XLA, no TF Serving). Grayscale and RGBA inputs come out as RGB.

    Args:
        contents: Scalar ``tf.string`` (or ``bytes``) holding one encoded image.
        channels: 3 for RGB, or 1 for Pillow-compatible luma
            (``L = (19595 R + 38470 G + 7471 B + 32768) >> 16``).
        allow_tiff: False builds a graph without ``tf.py_function`` (for SavedModels served
            without Python); TIFF bytes then fail to decode like any unknown format.

    Returns:
        uint8 tensor of shape ``[H, W, channels]`` (static shape ``[None, None, channels]``).

    Raises:
        ValueError: If ``channels`` is not 1 or 3.
        tf.errors.InvalidArgumentError: At run time, for bytes that are not a decodable image.
    """
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"Received: channels={channels!r}; expected 1 or 3")
    if not isinstance(allow_tiff, bool):
        raise TypeError(f"Received: allow_tiff={allow_tiff!r}; expected True or False")
    contents = tf.convert_to_tensor(contents, dtype=tf.string)
    if contents.shape.rank not in (None, 0):
        raise ValueError(
            f"Received: contents of shape {contents.shape}; expected a scalar string tensor"
        )
    if allow_tiff:
        image = tf.cond(
            _starts_with(contents, TIFF_MAGICS),
            lambda: _decode_tiff(contents),
            lambda: _decode_non_tiff(contents),
        )
    else:
        image = _decode_non_tiff(contents)
    image.set_shape([None, None, 3])
    if channels == 1:
        image = _rgb_to_luma(image)
        image.set_shape([None, None, 1])
    return image


def read_image(path: tf.Tensor | str | os.PathLike[str], *, channels: int = 3) -> tf.Tensor:
    """Read and decode one image file: ``tf.io.read_file`` then :func:`decode_image`.

    Args:
        path: Scalar string tensor or path.
        channels: See :func:`decode_image`.

    Returns:
        uint8 tensor ``[H, W, channels]``.
    """
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    return decode_image(tf.io.read_file(path), channels=channels)


def resize_image(image: tf.Tensor, size: int) -> tf.Tensor:
    """Resize to ``size x size`` with bilinear interpolation (half-pixel centres, no antialias).

    Values keep their range (0..255 for uint8 input); backbone-specific scaling is done later.
    The aspect ratio is not preserved.

    Args:
        image: ``[H, W, C]`` or batched ``[B, H, W, C]`` tensor of any real dtype.
        size: Output height and width, a positive integer.

    Returns:
        float32 tensor ``[size, size, C]`` (or ``[B, size, size, C]``).

    Raises:
        ValueError: If ``size`` is not a positive integer or the image rank is not 3 or 4.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"Received: size={size!r}; expected a positive integer")
    image = tf.convert_to_tensor(image)
    if image.shape.rank not in (None, 3, 4):
        raise ValueError(
            f"Received: image of shape {image.shape}; expected [H, W, C] or [B, H, W, C]"
        )
    resized = tf.image.resize(
        tf.cast(image, tf.float32), [int(size), int(size)], method="bilinear", antialias=False
    )
    return tf.cast(resized, tf.float32)

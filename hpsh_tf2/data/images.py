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

GeoTIFF training images (band reading): with a :class:`BandReading` that is active
(``data.bands`` or ``data.band_scale`` set, or ``model.input_bands`` other than 3), files named
``.tif`` / ``.tiff`` are read by :func:`hpsh_tf2.geo.raster.read_geotiff_rgb`, the scene
reader itself (rasterio: band selection, nodata, ``scale_to_uint8``), giving
``model.input_bands`` uint8 channels; JPEG, PNG and the other formats keep the decoding
above (with ``model.input_bands`` other than 3 they are refused). Resizing is
:func:`resize_image` for files and scene tiles alike. Without an active reading nothing
changes (TIFF through Pillow, as above).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image

from hpsh_tf2.errors import BadImageError
from hpsh_tf2.geo.raster import (
    BandError,
    SceneError,
    band_summary,
    is_geotiff,
    read_geotiff_rgb,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "TIFF_MAGICS",
    "BandReading",
    "band_hint",
    "decode_error",
    "decode_image",
    "first_undecodable",
    "has_image_extension",
    "image_to_rgb_array",
    "is_tiff",
    "load_image_bands",
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


@dataclass(frozen=True)
class BandReading:
    """How training images that are GeoTIFFs are read: bands, scaling, channels.

    Built from ``data.bands``, ``data.band_scale`` and ``model.input_bands``
    (:meth:`from_config`). The default (nothing set, 3 bands) is inactive: every file is
    decoded as before. Active, ``.tif`` / ``.tiff`` files go through the scene reader
    (see the module docstring).

    Attributes:
        bands: 1-based band indices in order (None: bands 1..``input_bands``).
        band_scale: ``data.band_scale`` (None: by data type).
        input_bands: Channels the model takes.
    """

    bands: tuple[int, ...] | None = None
    band_scale: str | tuple[str, ...] | None = None
    input_bands: int = 3

    @classmethod
    def from_config(cls, config: Any) -> BandReading:
        """The reading of a :class:`~hpsh_tf2.config.Config` (its ``data`` and ``model``)."""
        bands = config.data.bands
        scale = config.data.band_scale
        return cls(
            bands=None if bands is None else tuple(int(b) for b in bands),
            band_scale=scale if scale is None or isinstance(scale, str) else tuple(scale),
            input_bands=int(config.model.input_bands),
        )

    @property
    def active(self) -> bool:
        """Whether GeoTIFFs are read with the scene reader (anything set)."""
        return self.bands is not None or self.band_scale is not None or self.input_bands != 3

    def key(self) -> dict[str, Any] | None:
        """What a cache key records (None when inactive, so existing keys do not change)."""
        if not self.active:
            return None
        scale = self.band_scale
        return {
            "bands": None if self.bands is None else list(self.bands),
            "band_scale": scale if scale is None or isinstance(scale, str) else list(scale),
            "input_bands": self.input_bands,
        }


def _active(reading: BandReading | None) -> bool:
    return reading is not None and reading.active


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


def band_hint(path: str | os.PathLike[str]) -> str | None:
    """What to set for a multi-band or non-8-bit TIFF that Pillow cannot decode, or None.

    ``"<file> has 13 bands of uint16; set data.bands (e.g. [4, 3, 2]) and data.band_scale
    (e.g. '0-3000'), or model.input_bands"`` when the file (read by rasterio) has more than 4
    bands or is not uint8; None for anything else (or without rasterio).
    """
    name = os.fspath(path)
    if not name.lower().endswith((".tif", ".tiff")):
        return None
    summary = band_summary(name)
    if summary is None:
        return None
    count, dtype = summary
    if count <= 4 and dtype == "uint8":
        return None
    return (
        f"{os.path.basename(name)} has {count} band{'s' if count != 1 else ''} of {dtype}; set "
        "data.bands (e.g. [4, 3, 2]) and data.band_scale (e.g. '0-3000'), or model.input_bands"
    )


def _open_rgb(source: str | io.BytesIO, name: str) -> np.ndarray:
    try:
        with Image.open(source) as img:
            img.load()  # full decode: truncated files fail here, not later
            return image_to_rgb_array(img)
    except BadImageError:
        raise
    except (OSError, SyntaxError, ValueError, TypeError, Image.DecompressionBombError) as err:
        reason = str(err) or type(err).__name__
        hint = band_hint(source) if isinstance(source, str) else None
        raise BadImageError(name, hint or reason) from err


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


def load_image_bands(
    path: str | os.PathLike[str], reading: BandReading | None = None
) -> np.ndarray:
    """Read an image file as uint8 ``[H, W, C]``: :func:`load_image_rgb`, or the scene reader.

    With an active ``reading``, a ``.tif`` / ``.tiff`` file is read by
    :func:`hpsh_tf2.geo.raster.read_geotiff_rgb` with ``reading.bands`` and
    ``reading.band_scale`` (``C = reading.input_bands``); other files by :func:`load_image_rgb`
    (``C = 3``, refused when ``reading.input_bands`` is not 3).

    Args:
        path: Image file.
        reading: The band reading (None or inactive: :func:`load_image_rgb`).

    Returns:
        ``np.ndarray`` uint8 ``[H, W, C]``.

    Raises:
        BadImageError: The file is missing, truncated or not a readable image.
        BandError: The config does not fit the file (its message names the file and the key).
    """
    name = os.fspath(path)
    if not _active(reading):
        return load_image_rgb(name)
    assert reading is not None
    if is_geotiff(name):
        try:
            return read_geotiff_rgb(
                name, bands=reading.bands, band_scale=reading.band_scale, want=reading.input_bands
            )
        except BandError:
            raise
        except SceneError as err:
            raise BadImageError(name, str(err)) from None
    if reading.input_bands != 3:
        raise BandError(
            f"{name}: Received: model.input_bands={reading.input_bands} for a 3-band "
            f"{os.path.splitext(name)[1] or 'extensionless'} image; expected GeoTIFF "
            "(.tif/.tiff) training images, or model.input_bands=3"
        )
    return load_image_rgb(name)


def decode_error(path: str, reading: BandReading | None = None) -> BadImageError | None:
    """The :class:`BadImageError` of ``path`` if it cannot be fully decoded, else None.

    Raises:
        BandError: With an active ``reading``, when the config does not fit the file (a
            config error, not an undecodable file).
    """
    try:
        load_image_bands(path, reading)
    except BadImageError as err:
        return err
    return None


def first_undecodable(
    paths: Sequence[str],
    *,
    num_workers: int | None = None,
    block: int = 64,
    reading: BandReading | None = None,
) -> BadImageError | None:
    """The error of the first file in ``paths`` that cannot be fully decoded, or None.

    TF's image decoders name neither the file nor its position when a batch fails; this finds
    it after the fact. Files are decoded ``block`` at a time in a thread pool, in order, and
    the search stops at the first block holding a bad file.

    Args:
        paths: Image files, in the order to report them.
        num_workers: Decoding threads (default: the CPU count, at most 8).
        block: Files decoded per round.
        reading: The band reading the pipeline used (see :func:`load_image_bands`).

    Returns:
        The :class:`BadImageError` of the first undecodable file, or None if all decode.

    Raises:
        BandError: The config does not fit one of the files.
    """
    workers = num_workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(paths), block):
            chunk = paths[start : start + block]
            for error in pool.map(lambda p: decode_error(p, reading), chunk):
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


def read_image(
    path: tf.Tensor | str | os.PathLike[str],
    *,
    channels: int = 3,
    reading: BandReading | None = None,
) -> tf.Tensor:
    """Read and decode one image file: ``tf.io.read_file`` then :func:`decode_image`.

    With an active ``reading``, a path ending in ``.tif`` / ``.tiff`` is read instead by
    :func:`load_image_bands` (rasterio, the scene reader) inside ``tf.py_function``:
    unavoidable, as GDAL has no TensorFlow op; it works eagerly and inside ``Dataset.map``
    (not in a SavedModel). Other paths keep the TF decoders.

    Args:
        path: Scalar string tensor or path.
        channels: See :func:`decode_image` (3 with an active ``reading``).
        reading: The band reading (None or inactive: TIFF through Pillow, as before).

    Returns:
        uint8 tensor ``[H, W, channels]``, or ``[H, W, reading.input_bands]`` with an active
        ``reading``.
    """
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not _active(reading):
        return decode_image(tf.io.read_file(path), channels=channels)
    assert reading is not None
    if channels != 3:
        raise ValueError(f"Received: channels={channels!r} with a band reading; expected 3")
    path = tf.convert_to_tensor(path, dtype=tf.string)
    bands = reading.input_bands

    def load(name: tf.Tensor) -> np.ndarray:
        return load_image_bands(os.fsdecode(name.numpy()), reading)

    def geotiff() -> tf.Tensor:
        image = tf.py_function(load, [path], Tout=tf.uint8)
        image.set_shape([None, None, bands])
        return image

    def other() -> tf.Tensor:
        return decode_image(tf.io.read_file(path), channels=3)

    tif = tf.strings.regex_full_match(tf.strings.lower(path), r".*\.tiff?")
    # With other than 3 bands a non-TIFF cannot be used: load_image_bands says so by name.
    image = tf.cond(tif, geotiff, other if bands == 3 else geotiff)
    image.set_shape([None, None, bands])
    return image


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

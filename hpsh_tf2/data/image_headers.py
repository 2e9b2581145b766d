"""Image headers read with TensorFlow string ops: sizes and sanity checks, without decoding.

Used inside the exported SavedModel (:mod:`hpsh_tf2.export`) before any decoder sees a request's
bytes: :func:`declared_size` reads ``[width, height]`` from the header (PNG IHDR, JPEG SOFn, GIF
logical screen, BMP DIB header, WebP VP8 / VP8L / VP8X), :func:`jpeg_complete` looks for the
end-of-image marker after the last scan, and :func:`check_image_bytes` turns both (and the
leading magic bytes) into run-time assertions whose messages name the batch positions.
Everything is graph-friendly (``tf.while_loop``, ``tf.case``) and works on ``tf.string``
tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from hpsh_tf2.data.images import TIFF_MAGICS

__all__ = [
    "ACCEPTED_MAGICS",
    "check_image_bytes",
    "declared_size",
    "is_webp",
    "jpeg_complete",
    "jpeg_size",
    "starts_with_any",
    "webp_size",
]

ACCEPTED_MAGICS = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")  # JPEG, PNG, GIF, BMP (+ WebP)


def starts_with_any(image_bytes: tf.Tensor, magics: Sequence[bytes]) -> tf.Tensor:
    """Elementwise: whether each string starts with one of ``magics`` ([b] bool)."""
    hits = [
        tf.equal(tf.strings.substr(image_bytes, 0, len(magic)), tf.constant(magic))
        for magic in magics
    ]
    return tf.reduce_any(tf.stack(hits, axis=0), axis=0)


def is_webp(image_bytes: tf.Tensor) -> tf.Tensor:
    """Elementwise: ``RIFF....WEBP`` ([b] bool)."""
    riff = tf.equal(tf.strings.substr(image_bytes, 0, 4), tf.constant(b"RIFF"))
    length = tf.strings.length(image_bytes)
    tag = tf.strings.substr(image_bytes, tf.minimum(8, length), 4 * tf.ones_like(length))
    return riff & tf.equal(tag, tf.constant(b"WEBP"))


# ----------------------------------------------------------------- header parsing (no decoding)


def _raw(contents: tf.Tensor, start: tf.Tensor | int, size: int) -> tf.Tensor:
    """``size`` bytes of a scalar string from ``start`` as int64 [size]; zeros past the end."""
    length = tf.strings.length(contents)
    start = tf.clip_by_value(tf.cast(start, tf.int32), 0, length)
    piece = tf.strings.substr(contents, start, size)
    padded = tf.strings.join([piece, tf.constant(b"\0" * size)])
    return tf.cast(tf.io.decode_raw(padded, tf.uint8)[:size], tf.int64)


def _be16(b: tf.Tensor, i: int) -> tf.Tensor:
    return b[i] * 256 + b[i + 1]


def _le16(b: tf.Tensor, i: int) -> tf.Tensor:
    return b[i] + b[i + 1] * 256


def _le24(b: tf.Tensor, i: int) -> tf.Tensor:
    return b[i] + b[i + 1] * 256 + b[i + 2] * 65536


def _le32(b: tf.Tensor, i: int) -> tf.Tensor:
    return _le16(b, i) + _le16(b, i + 2) * 65536


def _be32(b: tf.Tensor, i: int) -> tf.Tensor:
    return _be16(b, i) * 65536 + _be16(b, i + 2)


def _unknown() -> tf.Tensor:
    return tf.constant([-1, -1], tf.int64)


# Start-of-frame markers (baseline, extended, progressive, lossless; not DHT C4, JPG C8, DAC CC).
_SOF_MARKERS = (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)
_JPEG_MAX_SEGMENTS = 1000


def jpeg_size(contents: tf.Tensor) -> tf.Tensor:
    """``[width, height]`` from the first SOFn segment of a JPEG, ``[-1, -1]`` if none."""
    length = tf.cast(tf.strings.length(contents), tf.int64)
    sof = tf.constant(_SOF_MARKERS, tf.int64)

    def step(pos, size, count):
        head = _raw(contents, pos, 9)
        valid = tf.equal(head[0], 0xFF) & (pos + 4 <= length)
        marker = head[1]
        is_sof = valid & tf.reduce_any(tf.equal(marker, sof)) & (pos + 9 <= length)
        standalone = tf.equal(marker, 0xFF) | tf.equal(marker, 0x01)
        standalone |= (marker >= 0xD0) & (marker <= 0xD8)
        advance = tf.where(
            tf.equal(marker, 0xFF),
            tf.constant(1, tf.int64),
            tf.where(standalone, tf.constant(2, tf.int64), 2 + _be16(head, 2)),
        )
        new_size = tf.where(is_sof, tf.stack([_be16(head, 7), _be16(head, 5)]), size)
        # stop (pos = length) on a bad byte, at the first SOF or at the start of scan (FFDA)
        stop = tf.logical_not(valid) | is_sof | tf.equal(marker, 0xDA)
        return tf.where(stop, length, pos + advance), new_size, count + 1

    _, size, _ = tf.while_loop(
        lambda pos, size, count: (pos < length) & (count < _JPEG_MAX_SEGMENTS),
        step,
        (tf.constant(2, tf.int64), _unknown(), tf.constant(0)),
    )
    return size


def webp_size(contents: tf.Tensor) -> tf.Tensor:
    """``[width, height]`` from a WebP VP8 / VP8L / VP8X header, ``[-1, -1]`` if none."""
    b = _raw(contents, 0, 30)
    chunk = tf.strings.substr(contents, tf.minimum(12, tf.strings.length(contents)), 4)
    vp8 = tf.stack([_le16(b, 26) % 16384, _le16(b, 28) % 16384])
    bits = _le32(b, 21)
    vp8l = tf.stack([bits % 16384 + 1, (bits // 16384) % 16384 + 1])
    vp8x = tf.stack([_le24(b, 24) + 1, _le24(b, 27) + 1])
    return tf.case(
        [
            (tf.equal(chunk, b"VP8 "), lambda: vp8),
            (tf.equal(chunk, b"VP8L"), lambda: vp8l),
            (tf.equal(chunk, b"VP8X"), lambda: vp8x),
        ],
        default=_unknown,
    )


def declared_size(contents: tf.Tensor) -> tf.Tensor:
    """``[width, height]`` (int64) read from one image's header, ``[-1, -1]`` when unknown.

    PNG: IHDR; GIF: the logical screen; BMP: the DIB header; JPEG: the first SOFn segment;
    WebP: the VP8 / VP8L / VP8X header. Nothing is decoded.
    """
    b = _raw(contents, 0, 26)
    png = tf.stack([_be32(b, 16), _be32(b, 20)])
    gif = tf.stack([_le16(b, 6), _le16(b, 8)])
    core_bmp = tf.equal(_le32(b, 14), 12)  # BITMAPCOREHEADER: 16-bit fields
    signed_h = _le32(b, 22)
    signed_h = tf.where(signed_h >= 2**31, 2**32 - signed_h, signed_h)  # top-down: negative
    bmp = tf.where(
        core_bmp, tf.stack([_le16(b, 18), _le16(b, 20)]), tf.stack([_le32(b, 18), signed_h])
    )
    head = tf.strings.substr(contents, 0, 4)
    return tf.case(
        [
            (tf.equal(head, b"\x89PNG"), lambda: png),
            (
                tf.equal(tf.strings.substr(head, 0, 3), b"\xff\xd8\xff"),
                lambda: jpeg_size(contents),
            ),
            (tf.equal(head, b"GIF8"), lambda: gif),
            (tf.equal(tf.strings.substr(head, 0, 2), b"BM"), lambda: bmp),
            (tf.equal(head, b"RIFF"), lambda: webp_size(contents)),
        ],
        default=_unknown,
    )


def jpeg_complete(contents: tf.Tensor) -> tf.Tensor:
    """Whether a JPEG has an end-of-image marker after its last start-of-scan marker.

    A file cut short (a partial upload, a truncated download) lacks it; an EXIF thumbnail's own
    end marker comes before the main image's first scan, so it does not count.
    """
    scans = tf.strings.split(contents, sep=b"\xff\xda")
    last = scans[-1]
    has_scan = tf.size(scans) > 1
    return has_scan & (tf.size(tf.strings.split(last, sep=b"\xff\xd9")) > 1)


def check_image_bytes(image_bytes: tf.Tensor, max_pixels: int) -> list[tf.Operation]:
    """Run-time checks with clear messages, before the decoders see the bytes."""
    empty = tf.equal(tf.strings.length(image_bytes), 0)
    tiff = starts_with_any(image_bytes, TIFF_MAGICS)
    known = starts_with_any(image_bytes, ACCEPTED_MAGICS) | is_webp(image_bytes)
    jpeg = starts_with_any(image_bytes, (b"\xff\xd8\xff",))
    sizes = tf.map_fn(declared_size, image_bytes, fn_output_signature=tf.TensorSpec([2], tf.int64))
    sizes = tf.reshape(sizes, [-1, 2])
    pixels = sizes[:, 0] * sizes[:, 1]
    too_big = known & (pixels > max_pixels)
    complete = tf.map_fn(jpeg_complete, image_bytes, fn_output_signature=tf.TensorSpec([], tf.bool))
    truncated = jpeg & (tf.logical_not(complete) | tf.reduce_any(sizes < 0, axis=1))
    return [
        tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(empty)),
            ["image_bytes: empty string(s) at batch positions", tf.where(empty)],
        ),
        tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(tiff)),
            [
                "image_bytes: TIFF is not supported inside the SavedModel (TF has no TIFF "
                "decoder); convert to PNG or JPEG first. TIFF at batch positions",
                tf.where(tiff),
            ],
        ),
        tf.debugging.Assert(
            tf.reduce_all(known | empty | tiff),
            [
                "image_bytes: not a JPEG, PNG, GIF, BMP or WebP image (unknown leading bytes) at "
                "batch positions",
                tf.where(tf.logical_not(known | empty | tiff)),
            ],
        ),
        tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(too_big)),
            [
                f"image_bytes: image larger than export.max_pixels={max_pixels} (width x height "
                "declared in its header; nothing was decoded) at batch positions",
                tf.where(too_big),
                "with [width, height]",
                tf.boolean_mask(sizes, too_big),
            ],
            summarize=64,
        ),
        tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(truncated)),
            [
                "image_bytes: truncated or corrupt JPEG (no frame header, or no end-of-image "
                "marker after its last scan) at batch positions",
                tf.where(truncated),
            ],
            summarize=64,
        ),
    ]

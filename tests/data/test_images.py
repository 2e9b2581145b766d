"""Tests of hpsh_tf2.data.images: Pillow loading, TF decoding (incl. TIFF), resizing."""

from __future__ import annotations

import io
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from hpsh_tf2.data.images import (
    IMAGE_EXTENSIONS,
    decode_image,
    first_undecodable,
    has_image_extension,
    is_tiff,
    load_image_rgb,
    read_image,
    resize_image,
)
from hpsh_tf2.errors import BadImageError, DatasetError
from tests.data.conftest import noisy_rgb, smooth_rgb, write_image

H, W = 255, 257  # odd sizes on purpose


def _gray3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def _round16(values: np.ndarray) -> np.ndarray:
    return np.floor(values.astype(np.float64) * 255.0 / 65535.0 + 0.5).astype(np.uint8)


def _case_rgb_png(tmp: Path) -> tuple[Path, np.ndarray]:
    rgb = noisy_rgb(H, W, 1)
    return write_image(tmp / "rgb.png", rgb), rgb


def _case_rgb_tiff(tmp: Path) -> tuple[Path, np.ndarray]:
    rgb = noisy_rgb(H, W, 2)
    return write_image(tmp / "rgb.tif", rgb), rgb


def _case_rgb_tiff_big_endian_lzw(tmp: Path) -> tuple[Path, np.ndarray]:
    rgb = noisy_rgb(31, 17, 3)
    path = write_image(tmp / "rgb_lzw.TIFF", rgb, compression="tiff_lzw")
    return path, rgb


def _case_gray_tiff(tmp: Path) -> tuple[Path, np.ndarray]:
    gray = noisy_rgb(H, W, 4)[..., 0]
    return write_image(tmp / "gray.tif", gray, mode="L"), _gray3(gray)


def _case_gray_png(tmp: Path) -> tuple[Path, np.ndarray]:
    gray = noisy_rgb(H, W, 5)[..., 1]
    return write_image(tmp / "gray.png", gray, mode="L"), _gray3(gray)


def _sixteen_bit_values() -> np.ndarray:
    values = np.random.default_rng(6).integers(0, 65536, size=(40, 33)).astype(np.uint16)
    values[0, :6] = [0, 128, 129, 385, 65535, 65407]  # around rounding boundaries
    return values


def _case_16bit_tiff(tmp: Path) -> tuple[Path, np.ndarray]:
    values = _sixteen_bit_values()
    path = write_image(tmp / "gray16.tif", values)
    if Image.open(path).mode != "I;16":
        raise RuntimeError("test setup: expected Pillow to write an I;16 TIFF")
    return path, _gray3(_round16(values))


def _case_16bit_png(tmp: Path) -> tuple[Path, np.ndarray]:
    values = _sixteen_bit_values()[::-1]
    return write_image(tmp / "gray16.png", values), _gray3(_round16(values))


def _case_16bit_big_endian_tiff(tmp: Path) -> tuple[Path, np.ndarray]:
    values = _sixteen_bit_values()[:, ::-1].copy()
    size = (values.shape[1], values.shape[0])
    img = Image.frombytes("I;16B", size, values.astype(">u2").tobytes())
    path = tmp / "gray16b.tif"
    img.save(path)
    return path, _gray3(_round16(values))


def _rgb48_tiff_bytes(values: np.ndarray) -> bytes:
    """A minimal uncompressed little-endian 16-bit-per-channel RGB TIFF, built by hand."""
    height, width, _ = values.shape
    pixels = values.astype("<u2").tobytes()
    n_tags = 10
    bits_offset = 8 + 2 + 12 * n_tags + 4
    data_offset = bits_offset + 6
    tags = [  # (tag, type, count, value); type 3 = SHORT, 4 = LONG
        (256, 3, 1, width),
        (257, 3, 1, height),
        (258, 3, 3, bits_offset),
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, data_offset),
        (277, 3, 1, 3),
        (278, 3, 1, height),
        (279, 4, 1, len(pixels)),
        (284, 3, 1, 1),
    ]
    out = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", n_tags)
    for tag, kind, count, value in tags:
        if kind == 3 and count == 1:
            out += struct.pack("<HHIHH", tag, kind, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, kind, count, value)
    return out + struct.pack("<I", 0) + struct.pack("<HHH", 16, 16, 16) + pixels


def _case_rgb48_tiff(tmp: Path) -> tuple[Path, np.ndarray]:
    values = np.random.default_rng(25).integers(0, 65536, size=(6, 7, 3)).astype(np.uint16)
    values[0, 0] = [129, 385, 65535]
    path = tmp / "rgb48.tif"
    path.write_bytes(_rgb48_tiff_bytes(values))
    return path, (values >> 8).astype(np.uint8)  # Pillow keeps the high byte


def _case_int32_tiff(tmp: Path) -> tuple[Path, np.ndarray]:
    values = np.array([[-5, 0, 257, 65535, 70000, 1000]], dtype=np.int32)
    path = write_image(tmp / "int32.tif", values, mode="I")
    expected = _round16(np.clip(values, 0, 65535))
    return path, _gray3(expected)


def _case_float_unit_tiff(tmp: Path) -> tuple[Path, np.ndarray]:
    values = np.random.default_rng(7).uniform(0, 1, size=(9, 14)).astype(np.float32)
    path = write_image(tmp / "float01.tif", values, mode="F")
    return path, _gray3(np.rint(values.astype(np.float64) * 255).astype(np.uint8))


def _case_float_wide_tiff(tmp: Path) -> tuple[Path, np.ndarray]:
    values = np.array([[-3.0, 0.4, 1.6, 254.6, 300.0, np.nan]], dtype=np.float32)
    path = write_image(tmp / "float_wide.tif", values, mode="F")
    expected = np.array([[0, 0, 2, 255, 255, 0]], dtype=np.uint8)
    return path, _gray3(expected)


def _case_rgba_png(tmp: Path) -> tuple[Path, np.ndarray]:
    rgba = np.random.default_rng(8).integers(0, 256, size=(H, W, 4), dtype=np.uint8)
    return write_image(tmp / "rgba.png", rgba, mode="RGBA"), rgba[..., :3]


def _case_rgba_tiff(tmp: Path) -> tuple[Path, np.ndarray]:
    rgba = np.random.default_rng(9).integers(0, 256, size=(20, 21, 4), dtype=np.uint8)
    return write_image(tmp / "rgba.tif", rgba, mode="RGBA"), rgba[..., :3]


def _case_la_png(tmp: Path) -> tuple[Path, np.ndarray]:
    la = np.random.default_rng(10).integers(0, 256, size=(12, 13, 2), dtype=np.uint8)
    return write_image(tmp / "la.png", la, mode="LA"), _gray3(la[..., 0])


def _palette_image(seed: int) -> tuple[Image.Image, np.ndarray]:
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, size=(256, 3), dtype=np.uint8)
    indices = rng.integers(0, 256, size=(23, 29), dtype=np.uint8)
    img = Image.fromarray(indices, mode="P")
    img.putpalette(palette.flatten().tolist())
    return img, palette[indices]


def _case_palette_png(tmp: Path) -> tuple[Path, np.ndarray]:
    img, expected = _palette_image(11)
    path = tmp / "palette.png"
    img.save(path, transparency=5)  # index 5 transparent: colour kept, alpha dropped
    return path, expected


def _case_palette_tiff(tmp: Path) -> tuple[Path, np.ndarray]:
    img, expected = _palette_image(12)
    path = tmp / "palette.tif"
    img.save(path)
    return path, expected


def _case_gif(tmp: Path) -> tuple[Path, np.ndarray]:
    img, expected = _palette_image(13)
    path = tmp / "palette.gif"
    img.save(path)
    return path, expected


def _case_bilevel_tiff(tmp: Path) -> tuple[Path, np.ndarray]:
    bits = np.random.default_rng(14).integers(0, 2, size=(19, 37)).astype(bool)
    path = tmp / "bits.tif"
    Image.fromarray(bits).save(path)
    return path, _gray3(np.where(bits, 255, 0).astype(np.uint8))


def _case_cmyk_tiff(tmp: Path) -> tuple[Path, np.ndarray]:
    cmyk = np.random.default_rng(15).integers(0, 256, size=(10, 11, 4), dtype=np.uint8)
    cmyk[..., 3] = 0  # without black, RGB = 255 - CMY exactly
    path = write_image(tmp / "cmyk.tif", cmyk, mode="CMYK")
    return path, 255 - cmyk[..., :3]


LOSSLESS_CASES: dict[str, Callable[[Path], tuple[Path, np.ndarray]]] = {
    "rgb_png_odd": _case_rgb_png,
    "rgb_tiff_odd": _case_rgb_tiff,
    "rgb_tiff_lzw_upper_ext": _case_rgb_tiff_big_endian_lzw,
    "gray_tiff": _case_gray_tiff,
    "gray_png": _case_gray_png,
    "16bit_tiff": _case_16bit_tiff,
    "16bit_big_endian_tiff": _case_16bit_big_endian_tiff,
    "16bit_png": _case_16bit_png,
    "int32_tiff": _case_int32_tiff,
    "rgb48_tiff": _case_rgb48_tiff,
    "float_unit_tiff": _case_float_unit_tiff,
    "float_wide_tiff": _case_float_wide_tiff,
    "rgba_png": _case_rgba_png,
    "rgba_tiff": _case_rgba_tiff,
    "la_png": _case_la_png,
    "palette_png_transparency": _case_palette_png,
    "palette_tiff": _case_palette_tiff,
    "gif": _case_gif,
    "bilevel_tiff": _case_bilevel_tiff,
    "cmyk_tiff": _case_cmyk_tiff,
}


@pytest.fixture(params=sorted(LOSSLESS_CASES))
def lossless_case(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, np.ndarray]:
    return LOSSLESS_CASES[request.param](tmp_path)


def _jpeg(tmp: Path, gray: bool = False) -> Path:
    rgb = smooth_rgb(H, W, 16)
    if gray:
        return write_image(tmp / "gray.JPG", rgb[..., 0], mode="L", quality=92)
    return write_image(tmp / "rgb.jpeg", rgb, quality=92)


def _pillow_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


# --------------------------------------------------------------------------- extensions


def test_image_extensions_constant() -> None:
    assert IMAGE_EXTENSIONS == (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".webp")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.tif", True),
        ("a.TIFF", True),
        ("dir/a.JpG", True),
        ("a.jpeg", True),
        ("a.PNG", True),
        ("a.WebP", True),
        ("a.gif", False),
        ("a.txt", False),
        ("tif", False),
        ("a.png.bak", False),
    ],
)
def test_has_image_extension(name: str, expected: bool) -> None:
    assert has_image_extension(name) is expected


# --------------------------------------------------------------------------- Pillow path


def test_load_image_rgb_lossless_matches_source(lossless_case: tuple[Path, np.ndarray]) -> None:
    path, expected = lossless_case
    got = load_image_rgb(path)
    assert got.dtype == np.uint8
    assert got.shape == (*expected.shape[:2], 3)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("gray", [False, True])
def test_load_image_rgb_jpeg_matches_pillow(tmp_path: Path, gray: bool) -> None:
    path = _jpeg(tmp_path, gray)
    got = load_image_rgb(path)
    assert got.shape == (H, W, 3)
    np.testing.assert_array_equal(got, _pillow_rgb(path))
    if gray:
        np.testing.assert_array_equal(got[..., 0], got[..., 2])


def test_load_image_rgb_accepts_str_path(tmp_path: Path) -> None:
    path, expected = _case_rgb_png(tmp_path)
    np.testing.assert_array_equal(load_image_rgb(str(path)), expected)


def _truncated_jpeg(tmp: Path) -> Path:
    data = _jpeg(tmp).read_bytes()
    path = tmp / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    return path


def _truncated_tiff(tmp: Path) -> Path:
    data = _case_rgb_tiff(tmp)[0].read_bytes()
    path = tmp / "truncated.tif"
    path.write_bytes(data[: len(data) // 2])
    return path


def _truncated_png(tmp: Path) -> Path:
    data = _case_rgb_png(tmp)[0].read_bytes()
    path = tmp / "truncated.png"
    path.write_bytes(data[: len(data) // 2])
    return path


def _garbage(tmp: Path) -> Path:
    path = tmp / "garbage.jpg"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return path


def _empty(tmp: Path) -> Path:
    path = tmp / "empty.png"
    path.write_bytes(b"")
    return path


def _tiff_header_only(tmp: Path) -> Path:
    path = tmp / "header.tif"
    path.write_bytes(b"II*\x00" + b"\x00" * 12)
    return path


BAD_FILES: dict[str, Callable[[Path], Path]] = {
    "truncated_jpeg": _truncated_jpeg,
    "truncated_tiff": _truncated_tiff,
    "truncated_png": _truncated_png,
    "garbage": _garbage,
    "empty": _empty,
    "tiff_header_only": _tiff_header_only,
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_load_image_rgb_bad_files_raise(tmp_path: Path, kind: str) -> None:
    path = BAD_FILES[kind](tmp_path)
    with pytest.raises(BadImageError) as info:
        load_image_rgb(path)
    assert info.value.path == str(path)
    assert info.value.reason
    assert str(path) in str(info.value)
    assert isinstance(info.value, DatasetError)
    assert isinstance(info.value, ValueError)


def test_load_image_rgb_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadImageError, match=r"nope\.png"):
        load_image_rgb(tmp_path / "nope.png")


# --------------------------------------------------------------------------- TF path


def test_decode_image_lossless_matches_source(
    lossless_case: tuple[Path, np.ndarray], runner
) -> None:
    path, expected = lossless_case
    got = runner(decode_image, path.read_bytes())
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("gray", [False, True])
def test_decode_image_jpeg_matches_pillow(tmp_path: Path, gray: bool, runner) -> None:
    path = _jpeg(tmp_path, gray)
    got = runner(decode_image, path.read_bytes())
    assert got.shape == (H, W, 3)
    np.testing.assert_array_equal(got, _pillow_rgb(path))


def test_decode_image_cmyk_jpeg_close_to_pillow(tmp_path: Path, runner) -> None:
    cmyk = np.random.default_rng(23).integers(0, 256, size=(16, 24, 4), dtype=np.uint8)
    path = write_image(tmp_path / "cmyk.jpg", cmyk, mode="CMYK", quality=95)
    got = runner(decode_image, path.read_bytes()).astype(np.int32)
    assert got.shape == (16, 24, 3)
    assert np.abs(got - _pillow_rgb(path).astype(np.int32)).max() <= 2


def test_decode_image_tiff_matches_load_image_rgb(tmp_path: Path, runner) -> None:
    path, _ = _case_16bit_tiff(tmp_path)
    np.testing.assert_array_equal(runner(decode_image, path.read_bytes()), load_image_rgb(path))


def test_decode_image_channels_one_matches_pillow_luma(tmp_path: Path, runner) -> None:
    rgb = noisy_rgb(21, 22, 17)
    png = write_image(tmp_path / "c.png", rgb).read_bytes()
    tif = write_image(tmp_path / "c.tif", rgb).read_bytes()
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    for contents in (png, tif):
        got = runner(lambda c: decode_image(c, channels=1), contents)
        assert got.shape == (21, 22, 1)
        np.testing.assert_array_equal(got[..., 0], expected)


def test_decode_image_static_shape_in_dataset(tmp_path: Path) -> None:
    tif = _case_rgb_tiff(tmp_path)[0].read_bytes()
    png = _case_rgb_png(tmp_path)[0].read_bytes()
    dataset = tf.data.Dataset.from_tensor_slices([tif, png]).map(decode_image)
    assert dataset.element_spec.shape.as_list() == [None, None, 3]
    assert dataset.element_spec.dtype == tf.uint8
    shapes = [image.shape for image in dataset]
    assert shapes == [(H, W, 3), (H, W, 3)]


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_decode_image_bad_bytes_raise(tmp_path: Path, kind: str, runner) -> None:
    contents = BAD_FILES[kind](tmp_path).read_bytes()
    with pytest.raises(tf.errors.InvalidArgumentError):
        runner(decode_image, contents)


def test_decode_image_without_tiff_support(tmp_path: Path, runner) -> None:
    png_path, png_expected = _case_rgb_png(tmp_path)
    jpg_path = _jpeg(tmp_path)
    no_tiff = lambda c: decode_image(c, allow_tiff=False)  # noqa: E731
    np.testing.assert_array_equal(runner(no_tiff, png_path.read_bytes()), png_expected)
    np.testing.assert_array_equal(runner(no_tiff, jpg_path.read_bytes()), _pillow_rgb(jpg_path))
    with pytest.raises(tf.errors.InvalidArgumentError):
        runner(no_tiff, _case_rgb_tiff(tmp_path)[0].read_bytes())


def _op_types(fn: Callable[[tf.Tensor], tf.Tensor]) -> set[str]:
    """Op types of a traced function, cond branches (library functions) included."""
    graph_def = tf.function(fn).get_concrete_function(tf.TensorSpec([], tf.string)).graph
    graph_def = graph_def.as_graph_def()
    types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        types |= {node.op for node in function.node_def}
    return types


def test_decode_image_without_tiff_has_no_py_function() -> None:
    assert not any("PyFunc" in t for t in _op_types(lambda c: decode_image(c, allow_tiff=False)))
    assert any("PyFunc" in t for t in _op_types(decode_image))


@pytest.mark.parametrize("channels", [0, 2, 4, True, "3"])
def test_decode_image_rejects_channels(channels: object) -> None:
    with pytest.raises(ValueError, match="channels"):
        decode_image(b"", channels=channels)


def test_decode_image_rejects_allow_tiff_non_bool() -> None:
    with pytest.raises(TypeError, match="allow_tiff"):
        decode_image(b"", allow_tiff="no")


def test_decode_image_rejects_non_scalar() -> None:
    with pytest.raises(ValueError, match="scalar"):
        decode_image(tf.constant([b"a", b"b"]))


def test_read_image(tmp_path: Path, runner) -> None:
    path, expected = _case_rgb_tiff(tmp_path)
    np.testing.assert_array_equal(runner(read_image, str(path)), expected)
    np.testing.assert_array_equal(read_image(path).numpy(), expected)


def test_read_image_missing_file(tmp_path: Path) -> None:
    with pytest.raises(tf.errors.NotFoundError):
        read_image(str(tmp_path / "missing.png"))


# --------------------------------------------------------------------------- resize


def _bilinear_reference(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres, written independently in NumPy."""
    src = image.astype(np.float64)

    def axis(in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        centre = (np.arange(size) + 0.5) * (in_size / size) - 0.5
        base = np.floor(centre)
        frac = centre - base
        low = np.clip(base, 0, in_size - 1).astype(int)
        high = np.clip(base + 1, 0, in_size - 1).astype(int)
        return low, high, frac

    y0, y1, fy = axis(src.shape[0])
    x0, x1, fx = axis(src.shape[1])
    top = src[y0][:, x0] * (1 - fx)[None, :, None] + src[y0][:, x1] * fx[None, :, None]
    bottom = src[y1][:, x0] * (1 - fx)[None, :, None] + src[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


@pytest.mark.parametrize(("height", "width", "size"), [(255, 257, 64), (7, 5, 16), (9, 9, 9)])
def test_resize_image_matches_numpy_bilinear(height: int, width: int, size: int, runner) -> None:
    image = noisy_rgb(height, width, 18)
    got = runner(lambda x: resize_image(x, size), image)
    assert got.dtype == np.float32
    assert got.shape == (size, size, 3)
    np.testing.assert_allclose(got, _bilinear_reference(image, size), atol=1e-3)
    assert got.min() >= 0.0
    assert got.max() <= 255.0


def test_resize_image_jit_compile_and_unknown_shape() -> None:
    image = noisy_rgb(13, 11, 24)
    jitted = tf.function(lambda x: resize_image(x, 8), jit_compile=True)
    np.testing.assert_allclose(jitted(image).numpy(), _bilinear_reference(image, 8), atol=1e-3)
    generic = tf.function(
        lambda x: resize_image(x, 8),
        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)],
    )
    assert generic.get_concrete_function().structured_outputs.shape.as_list() == [8, 8, 3]
    np.testing.assert_allclose(generic(image).numpy(), _bilinear_reference(image, 8), atol=1e-3)


def test_resize_image_same_size_is_identity() -> None:
    image = noisy_rgb(9, 9, 19)
    np.testing.assert_array_equal(resize_image(image, 9).numpy(), image.astype(np.float32))


def test_resize_image_batched() -> None:
    batch = np.stack([noisy_rgb(10, 12, 20), noisy_rgb(10, 12, 21)])
    got = resize_image(batch, 6).numpy()
    assert got.shape == (2, 6, 6, 3)
    np.testing.assert_allclose(got[1], _bilinear_reference(batch[1], 6), atol=1e-3)


@pytest.mark.parametrize("size", [0, -3, 2.5, True, "64"])
def test_resize_image_rejects_size(size: object) -> None:
    with pytest.raises(ValueError, match="size"):
        resize_image(noisy_rgb(4, 4), size)


def test_resize_image_rejects_rank() -> None:
    with pytest.raises(ValueError, match="shape"):
        resize_image(np.zeros((4, 4), np.uint8), 2)


def test_decode_then_resize_pipeline(tmp_path: Path) -> None:
    paths = [str(_case_rgb_tiff(tmp_path)[0]), str(_jpeg(tmp_path))]
    dataset = tf.data.Dataset.from_tensor_slices(paths).map(
        lambda p: resize_image(read_image(p), 32)
    )
    batch = next(iter(dataset.batch(2))).numpy()
    assert batch.shape == (2, 32, 32, 3)
    expected = _bilinear_reference(load_image_rgb(paths[0]), 32)
    np.testing.assert_allclose(batch[0], expected, atol=1e-3)


def test_bad_image_error_pickles() -> None:

    err = pickle.loads(pickle.dumps(BadImageError("a/b.png", "broken")))
    assert (err.path, err.reason) == ("a/b.png", "broken")


def test_decode_image_accepts_python_bytes() -> None:
    buffer = io.BytesIO()
    rgb = noisy_rgb(5, 6, 22)
    Image.fromarray(rgb).save(buffer, format="TIFF")
    np.testing.assert_array_equal(decode_image(buffer.getvalue()).numpy(), rgb)


@pytest.mark.parametrize(
    ("fmt", "kwargs", "expected"),
    [
        ("TIFF", {}, True),
        ("TIFF", {"big_tiff": True}, True),
        ("PNG", {}, False),
        ("JPEG", {}, False),
    ],
)
def test_is_tiff_by_magic_bytes(fmt: str, kwargs: dict, expected: bool) -> None:
    buffer = io.BytesIO()
    Image.fromarray(noisy_rgb(4, 4, 3)).save(buffer, format=fmt, **kwargs)
    data = buffer.getvalue()
    assert is_tiff(data) is expected
    assert is_tiff(data[:4]) is expected  # the first four bytes decide


def test_is_tiff_big_endian_and_short_inputs() -> None:
    assert is_tiff(b"MM\x00*" + b"\x00" * 8) and is_tiff(b"MM\x00+")
    assert not is_tiff(b"") and not is_tiff(b"II*") and not is_tiff(b"GIF89a")


def test_first_undecodable_names_the_first_bad_file_in_order(tmp_path: Path) -> None:
    paths = []
    for i in range(7):
        path = tmp_path / f"{i}.png"
        Image.fromarray(noisy_rgb(12, 10, seed=i)).save(path)
        paths.append(str(path))
    assert first_undecodable(paths) is None
    assert first_undecodable([]) is None
    for bad in (5, 3):  # both truncated; 3 comes first, in the second block of two
        Path(paths[bad]).write_bytes(Path(paths[bad]).read_bytes()[:40])
    error = first_undecodable(paths, num_workers=2, block=2)
    assert isinstance(error, BadImageError) and error.path == paths[3]
    assert first_undecodable(paths[4:], block=1).path == paths[5]


# --------------------------------------------------------------------------- multi-band TIFF hint


@pytest.mark.parametrize(
    ("count", "dtype", "hinted"), [(13, np.uint16, True), (4, np.uint8, False)]
)
def test_a_multi_band_tiff_without_band_settings_names_what_to_set(tmp_path, count, dtype, hinted):
    from hpsh_tf2.data.images import band_hint, decode_error
    from tests.geo.conftest import write_geotiff

    values = np.random.default_rng(0).integers(0, 200, (count, 16, 16)).astype(dtype)
    path = write_geotiff(tmp_path / "s2.tif", values, nodata=None)
    expected = (
        "s2.tif has 13 bands of uint16; set data.bands (e.g. [4, 3, 2]) and data.band_scale "
        "(e.g. '0-3000'), or model.input_bands"
    )
    assert band_hint(path) == (expected if hinted else None)
    error = decode_error(str(path))
    if hinted:
        assert error is not None and error.reason == expected
    assert band_hint(tmp_path / "x.png") is None

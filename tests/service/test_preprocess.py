"""Image bytes -> model input: real files written by PIL in every accepted format and mode."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from service.errors import BadRequest, PayloadTooLarge
from service.preprocess import decode, preprocess

GRAY = {"color": "L", "resize": [8, 8], "resample": "bilinear", "invert": False}
RGB = {"color": "RGB", "resize": [8, 8], "resample": "bilinear", "invert": False}
LIMIT = 16_000_000


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def run(data: bytes, spec: dict = GRAY, content_type: str | None = None) -> np.ndarray:
    return preprocess(data, content_type, spec, LIMIT)


def left_half_white(width: int = 32, height: int = 32, mode: str = "L") -> Image.Image:
    pixels = np.zeros((height, width), np.uint8)
    pixels[:, : width // 2] = 255
    return Image.fromarray(pixels).convert(mode)


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height, with the pixel data of a few rows only."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    idat = zlib.compress(b"\0" * (width + 1) * 4)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def noise(size: int = 64, mode: str = "L") -> Image.Image:
    rng = np.random.default_rng(0)
    shape = (size, size) if mode == "L" else (size, size, 3)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))


# --- formats ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("PNG", {}),
        ("JPEG", {"quality": 95}),
        ("GIF", {}),
        ("BMP", {}),
        ("TIFF", {}),
        ("WEBP", {"quality": 95}),
    ],
)
def test_every_accepted_format_decodes(fmt: str, options: dict) -> None:
    data = encode(left_half_white(), fmt, **options)
    x = run(data)
    assert x.shape == (1, 8, 8) and x.dtype == np.float32
    assert x[0, :, :3].mean() > 0.9  # the white half stays white
    assert x[0, :, 5:].mean() < 0.1  # and the black half black
    assert decode(data, None, LIMIT).format == fmt


# --- modes ------------------------------------------------------------------------------------


def test_grayscale_keeps_exact_values() -> None:
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    x = run(encode(Image.fromarray(pixels), "PNG"))
    np.testing.assert_allclose(x[0], pixels / 255.0, atol=1e-6)


def test_rgb_to_gray_uses_luminance_and_rgb_model_keeps_channels() -> None:
    data = encode(Image.new("RGB", (8, 8), (255, 0, 0)), "PNG")
    assert run(data)[0].mean() == pytest.approx(0.299, abs=0.01)
    x = run(data, RGB)
    assert x.shape == (3, 8, 8)
    np.testing.assert_allclose(x.mean(axis=(1, 2)), [1.0, 0.0, 0.0])


def test_gray_image_for_an_rgb_model_repeats_the_channel() -> None:
    x = run(encode(Image.new("L", (8, 8), 51), "PNG"), RGB)
    assert x.shape == (3, 8, 8)
    np.testing.assert_allclose(x, 0.2, atol=1e-6)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_rgba_transparent_pixels_are_black(fmt: str) -> None:
    pixels = np.full((8, 8, 4), 255, np.uint8)
    pixels[:, :4, 3] = 0  # left half: white but fully transparent
    options = {"lossless": True} if fmt == "WEBP" else {}
    x = run(encode(Image.fromarray(pixels, "RGBA"), fmt, **options))
    np.testing.assert_allclose(x[0, :, :4], 0.0, atol=1e-6)
    np.testing.assert_allclose(x[0, :, 4:], 1.0, atol=1e-6)


def test_palette_image() -> None:
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 255, 255, 255] + [0, 0, 0] * 254)
    image.paste(0, (0, 0, 4, 8))
    for fmt in ("PNG", "GIF"):
        x = run(encode(image, fmt))
        np.testing.assert_allclose(x[0, :, :4], 0.0, atol=1e-6)
        np.testing.assert_allclose(x[0, :, 4:], 1.0, atol=1e-6)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_is_black(fmt: str) -> None:
    image = Image.new("P", (8, 8), 1)
    image.putpalette([255, 255, 255] * 256)  # every entry white ...
    image.paste(0, (0, 0, 4, 8))  # ... but entry 0, on the left half, is transparent
    data = encode(image, fmt, transparency=0)
    assert Image.open(io.BytesIO(data)).info.get("transparency") == 0
    x = run(data)
    np.testing.assert_allclose(x[0, :, :4], 0.0, atol=1e-6)
    np.testing.assert_allclose(x[0, :, 4:], 1.0, atol=1e-6)


def test_gray_with_alpha() -> None:
    pixels = np.zeros((8, 8, 2), np.uint8)
    pixels[..., 0] = 255
    pixels[:, :4, 1] = 0  # transparent white -> black
    pixels[:, 4:, 1] = 255  # opaque white -> white
    pixels[0, :, :] = (128, 128)  # half-transparent mid-gray -> a quarter
    x = run(encode(Image.fromarray(pixels, "LA"), "PNG"))
    np.testing.assert_allclose(x[0, 1:, :4], 0.0, atol=1e-6)
    np.testing.assert_allclose(x[0, 1:, 4:], 1.0, atol=1e-6)
    assert x[0, 0].mean() == pytest.approx(128 * 128 / 255 / 255, abs=0.01)


def test_one_bit_image() -> None:
    image = Image.fromarray((np.indices((8, 8)).sum(axis=0) % 2 * 255).astype(np.uint8))
    data = encode(image.convert("1"), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "1"
    x = run(data)
    np.testing.assert_array_equal(x[0], np.indices((8, 8)).sum(axis=0) % 2)


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    pixels = np.full((8, 8), 32768, np.uint16)
    pixels[0] = 65535
    pixels[1] = 0
    pixels[2] = 16384
    data = encode(Image.fromarray(pixels), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # really 16 bits per pixel
    x = run(data)
    assert x[0, 3:].mean() == pytest.approx(0.5, abs=0.001)  # PIL's convert("L") gives 1.0
    assert x[0, 0].mean() == pytest.approx(1.0)
    assert x[0, 1].mean() == pytest.approx(0.0)
    assert x[0, 2].mean() == pytest.approx(0.25, abs=0.001)
    assert run(data, RGB).shape == (3, 8, 8)


def test_cmyk_jpeg() -> None:
    white = encode(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "JPEG", quality=95)
    black = encode(Image.new("CMYK", (8, 8), (0, 0, 0, 255)), "JPEG", quality=95)
    assert Image.open(io.BytesIO(white)).mode == "CMYK"
    assert run(white).mean() == pytest.approx(1.0, abs=0.02)
    assert run(black).mean() == pytest.approx(0.0, abs=0.02)
    assert run(white, RGB).shape == (3, 8, 8)


def test_unconvertible_mode_is_a_client_error() -> None:
    data = encode(Image.new("LAB", (8, 8), (50, 0, 0)), "TIFF")  # PIL cannot make LAB gray
    with pytest.raises(BadRequest, match="LAB"):
        run(data)


# --- geometry and options ---------------------------------------------------------------------


def test_resize_to_the_models_size() -> None:
    image = left_half_white(40, 30)
    assert run(encode(image, "PNG")).shape == (1, 8, 8)
    spec = {**RGB, "resize": [6, 4]}  # [width, height]
    x = run(encode(image.convert("RGB"), "PNG"), spec)
    assert x.shape == (3, 4, 6)
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert x[:, :, :2].mean() > 0.9 and x[:, :, 4:].mean() < 0.1


@pytest.mark.parametrize("resample", ["nearest", "bilinear", "bicubic", "lanczos"])
def test_every_resample_filter_stays_in_range(resample: str) -> None:
    x = run(encode(noise(50), "PNG"), {**GRAY, "resample": resample})
    assert x.shape == (1, 8, 8)
    assert x.min() >= 0.0 and x.max() <= 1.0


def test_invert_flag() -> None:
    data = encode(left_half_white(8, 8), "PNG")
    x = run(data, {**GRAY, "invert": True})
    np.testing.assert_allclose(x[0, :, :4], 0.0)
    np.testing.assert_allclose(x[0, :, 4:], 1.0)


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the left half goes on top
    data = encode(left_half_white(32, 16), "JPEG", quality=95, exif=exif)
    x = run(data)[0]
    assert x[:4].mean() > 0.9 and x[4:].mean() < 0.1
    # Without the tag the same pixels stay left/right.
    plain = run(encode(left_half_white(32, 16), "JPEG", quality=95))[0]
    assert plain[:, :4].mean() > 0.9 and plain[:, 4:].mean() < 0.1


# --- refusals ---------------------------------------------------------------------------------


def test_empty_body() -> None:
    with pytest.raises(BadRequest, match="empty") as info:
        run(b"", content_type="image/png")
    assert info.value.status_code == 400


def test_text_is_not_an_image() -> None:
    text = b"hello, this is not an image\n"
    with pytest.raises(BadRequest) as info:
        run(text, content_type="text/plain")
    assert info.value.status_code == 400
    assert "expected an image" in info.value.message
    assert f"got {len(text)} bytes of text/plain" in info.value.message


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(fmt: str) -> None:
    data = encode(noise(64), fmt)
    with pytest.raises(BadRequest) as info:
        run(data[: len(data) // 2], content_type=f"image/{fmt.lower()}")
    assert info.value.status_code == 400
    assert "truncated" in info.value.message and "corrupt" in info.value.message
    assert fmt in info.value.message


def test_corrupt_png_checksum() -> None:
    data = bytearray(encode(noise(32), "PNG"))
    data[60] ^= 0xFF  # a byte inside the compressed pixel data
    with pytest.raises(BadRequest, match="corrupt"):
        run(bytes(data))


@pytest.mark.parametrize("max_pixels", [LIMIT, 10**12])
def test_decompression_bomb_refused_from_the_header(max_pixels: int) -> None:
    """30000 x 30000 = 900 Mpixels declared in 100 bytes: refused before any pixel is decoded.

    With the service's limit the header check refuses it; with a limit above it, Pillow's own
    bomb guard still does. Decoding it would allocate 900 MB and take seconds."""
    data = png_header_only(30000, 30000)
    assert len(data) < 1000
    started = time.perf_counter()
    with pytest.raises(PayloadTooLarge) as info:
        preprocess(data, "image/png", GRAY, max_pixels)
    assert time.perf_counter() - started < 0.5
    assert info.value.status_code == 413
    assert "30000" in info.value.message or "bomb" in info.value.message


def test_image_over_the_pixel_limit() -> None:
    with pytest.raises(PayloadTooLarge, match="100x100"):
        preprocess(encode(noise(100), "PNG"), "image/png", GRAY, 5000)


def pillow_path(data: bytes, spec: dict) -> np.ndarray:
    from service.preprocess import to_input

    return to_input(decode(data, "image/png", LIMIT, tuple(spec["resize"])), spec)


@pytest.mark.parametrize(
    ("mode", "size", "spec"),
    [
        ("L", 8, GRAY),  # the common request: already the model's size
        ("L", 8, RGB),  # gray for an RGB model: the channel repeated
        ("RGB", 8, RGB),
        ("L", 5, GRAY),  # resized up
        ("L", 20, {**GRAY, "invert": True}),  # resized down, not reduced first
        ("RGB", 13, {**RGB, "resample": "bicubic"}),
        ("RGB", 8, GRAY),  # Pillow's luma: not libspng's to take
        ("L", 64, GRAY),  # reduced first: Pillow's path
    ],
)
def test_libspng_png_path_is_pillows_to_the_bit(mode: str, size: int, spec: dict) -> None:
    """service.preprocess.simple_png takes plain 8-bit PNGs (~5 us against Pillow's ~60):
    what it answers is exactly what Pillow's path answers."""
    data = encode(noise(size, mode), "PNG")
    fast = run(data, spec)
    assert fast.dtype == np.float32
    assert np.array_equal(fast, pillow_path(data, spec))


def test_libspng_leaves_transparency_and_orientation_to_pillow() -> None:
    from service.preprocess import pyspng, simple_png

    if pyspng is None:
        pytest.skip("pyspng has no wheel for this platform")
    plain = encode(noise(8), "PNG")
    assert simple_png(plain, "L", LIMIT, (8, 8)) is not None
    with_alpha = encode(noise(8), "PNG", transparency=0)
    assert simple_png(with_alpha, "L", LIMIT, (8, 8)) is None
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = encode(noise(8), "PNG", exif=exif)
    assert simple_png(rotated, "L", LIMIT, (8, 8)) is None
    assert simple_png(plain, "L", 63, (8, 8)) is None  # over the pixel limit: Pillow refuses
    from PIL import PngImagePlugin

    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    )
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp)
    with_xmp = encode(noise(8), "PNG", pnginfo=info)
    assert simple_png(with_xmp, "L", LIMIT, (8, 8)) is None
    rotated = pillow_path(with_xmp, GRAY)
    assert not np.array_equal(rotated, pillow_path(plain, GRAY))  # Pillow turns it upright
    assert np.array_equal(run(with_xmp), rotated)


def test_libspng_path_refuses_corrupt_and_truncated_pngs() -> None:
    """A PNG small enough for libspng, damaged: the same 400 as Pillow's path gives."""
    data = encode(noise(12), "PNG")
    start = data.index(b"IDAT") + 8
    corrupt = bytearray(data)
    corrupt[start] ^= 0xFF  # inside the compressed pixels: the chunk's CRC no longer matches
    with pytest.raises(BadRequest, match="corrupt"):
        run(bytes(corrupt))
    with pytest.raises(BadRequest, match="truncated"):
        run(data[: start + 4])

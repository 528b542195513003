"""Image bytes -> the model's input: decode, convert the mode, resize, scale to [0, 1].

How is the model's to say (`mimo.preprocess`): color "L" or "RGB", resize [width, height],
resample filter, invert. Transparent pixels count as black (no ink), the background of the
light-on-dark datasets; 16-bit images keep their full range; JPEG EXIF orientation is applied.
"""

from __future__ import annotations

import asyncio
import io
import re
import struct
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from service.errors import BadRequest, PayloadTooLarge

try:  # libspng: a small 8-bit PNG in ~5 us, where Pillow takes ~60 us (the common request)
    import pyspng
except ImportError:  # no wheel for this platform (pyproject.toml): Pillow decodes every PNG
    pyspng = None

# The image formats a request may carry, by name, with their media types. Only these decoders
# ever see a request's bytes (Pillow knows many more, EPS among them).
IMAGE_FORMATS = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "WebP": "image/webp",
}
FORMATS = tuple(name.upper() for name in IMAGE_FORMATS)  # Pillow's names
MEDIA_TYPES = tuple(IMAGE_FORMATS.values())
ACCEPTED = f"{', '.join(list(IMAGE_FORMATS)[:-1])} or {list(IMAGE_FORMATS)[-1]}"
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_REDUCIBLE = {"L", "LA", "RGB", "RGBA", "CMYK", "YCbCr"}
# EXIF orientation (tag 0x0112) -> the transposition that displays the image upright.
_ORIENTATION = 0x0112
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# What Pillow raises on an EXIF block it cannot read.
_BAD_EXIF = (struct.error, SyntaxError, ValueError, TypeError, KeyError, IndexError, OSError)


def _describe(data: bytes, content_type: str | None) -> str:
    kind = content_type or "unknown type"
    return f"{len(data)} bytes of {kind}"


def decode(
    data: bytes,
    content_type: str | None,
    max_pixels: int,
    target: tuple[int, int] | None = None,
) -> Image.Image:
    """Open and fully decode an image, refusing empty, foreign, truncated and huge inputs.

    With a `target` size, a JPEG is decoded at the smallest DCT scale still twice that size.
    """
    if not data:
        raise BadRequest(f"empty body: expected an image ({ACCEPTED})")
    image: Image.Image | None = None
    try:
        # The pixel count is read from the header and checked before any pixel is decoded;
        # Pillow's own bomb guard (an error past 2x Image.MAX_IMAGE_PIXELS) stays as a backstop.
        image = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise PayloadTooLarge(
                f"image is {width}x{height} = {width * height:,} pixels; the limit is "
                f"{max_pixels:,} (MIMO_MAX_IMAGE_PIXELS): send a smaller image"
            )
        if target is not None and image.format == "JPEG":
            image.draft(image.mode, (2 * target[0], 2 * target[1]))
        image.load()
    except PayloadTooLarge:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow refuses it on opening, before the size is known here: its message says how
        # many pixels, in its own terms (its limit is not the service's setting).
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(declared.group(1)):,} pixels" if declared else "too many pixels"
        guard = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        limit = (
            f"{max_pixels:,} (MIMO_MAX_IMAGE_PIXELS)"
            if not guard or max_pixels <= guard
            else f"{guard:,} (Pillow's own guard; MIMO_MAX_IMAGE_PIXELS is higher)"
        )
        raise PayloadTooLarge(
            f"image refused as a decompression bomb: its header declares {pixels}; the limit "
            f"is {limit}: send a smaller image"
        ) from None
    except UnidentifiedImageError:
        raise BadRequest(
            f"expected an image ({ACCEPTED}), got {_describe(data, content_type)}"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadRequest(
            f"could not decode the {getattr(image, 'format', None) or 'image'} "
            f"({_describe(data, content_type)}): {exc}; the file may be truncated or corrupt"
        ) from None
    assert image is not None
    return image


def upright(image: Image.Image) -> Image.Image:
    """The image as its EXIF orientation says to show it; as stored when it has none, or when
    the EXIF block cannot be read (ImageOps.exif_transpose also rewrites the block, and raised
    struct.error on damaged ones: a 500)."""
    try:
        orientation = image.getexif().get(_ORIENTATION)
    except _BAD_EXIF:
        return image
    method = _UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    return image if method is None else image.transpose(method)


def _to_mode(image: Image.Image, color: str) -> np.ndarray:
    """float32 [H, W, C] in [0, 1] in the requested color ("L" or "RGB")."""
    image = upright(image)
    if image.mode in _SIXTEEN_BIT:
        # PIL's convert("L") clips 16-bit values instead of scaling them.
        gray = np.asarray(image, dtype=np.float32) / 65535.0
        gray = np.clip(gray, 0.0, 1.0)[..., None]
        return gray if color == "L" else np.repeat(gray, 3, axis=-1)
    if image.mode == "F":
        gray = np.clip(np.asarray(image, dtype=np.float32) / 255.0, 0.0, 1.0)[..., None]
        return gray if color == "L" else np.repeat(gray, 3, axis=-1)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, rgba)
    return (
        np.asarray(image.convert(color), dtype=np.float32).reshape(image.size[1], image.size[0], -1)
        / 255.0
    )


def to_input(image: Image.Image, spec: dict[str, Any]) -> np.ndarray:
    """A decoded image -> float32 [C, H, W] in [0, 1], as the model's preprocess says."""
    # Shrink large 8-bit images while they are still bytes: converting a 4000x4000 image to
    # float first costs half a second and hundreds of MB for a 28x28 answer.
    factor = _reduce_factor(image.width, image.height, tuple(spec["resize"]))
    if factor >= 2 and image.mode in _REDUCIBLE:
        image = image.reduce(factor)
    return _finish(_to_mode(image, spec["color"]), spec)


def _reduce_factor(width: int, height: int, target: tuple[int, int]) -> int:
    """By how much to_input shrinks an image of this size first (at least 2 to shrink)."""
    return min(width // (2 * target[0]), height // (2 * target[1]))


def _finish(pixels: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """float32 [h, w, c] in [0, 1] -> [C, H, W]: resized, inverted as the model says."""
    width, height = spec["resize"]
    if pixels.shape[:2] != (height, width):
        resample = RESAMPLE[spec.get("resample", "bilinear")]
        channels = [
            np.asarray(
                Image.fromarray(pixels[..., c], mode="F").resize((width, height), resample),
                dtype=np.float32,
            )
            for c in range(pixels.shape[-1])
        ]
        pixels = np.clip(np.stack(channels, axis=-1), 0.0, 1.0)
    if spec.get("invert", False):
        pixels = 1.0 - pixels
    return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)


_PNG = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3}  # IHDR colour type -> channels: gray, RGB
# Chunks that make Pillow's answer differ from the bare pixels: tRNS (transparency), eXIf and
# the text chunks (Pillow's getexif() also reads an orientation from XMP in iTXt and from
# ImageMagick's "Raw profile type exif" in tEXt/zTXt). Four such bytes inside compressed
# pixels only send the file to Pillow, which is never wrong.
_PILLOW_CHUNKS = (b"tRNS", b"eXIf", b"tEXt", b"zTXt", b"iTXt")


def simple_png(
    data: bytes, color: str, max_pixels: int, target: tuple[int, int]
) -> np.ndarray | None:
    """float32 [H, W, C] in [0, 1] of an 8-bit gray or RGB PNG, decoded by libspng, when
    Pillow's path would do nothing more to it: no transparency, no EXIF orientation, no
    shrinking of a large image first, no colour conversion but gray to RGB (a copy). None for
    anything else, and for anything libspng refuses: Pillow then decodes it (and words the
    errors). One difference is kept on purpose: an ancillary chunk with a bad CRC is skipped,
    as libpng does, where Pillow refuses the whole file (the pixels' own chunks are checked)."""
    if pyspng is None or len(data) < 33 or not data.startswith(_PNG) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    channels = _PNG_CHANNELS.get(data[25])
    if data[24] != 8 or channels is None or width * height > max_pixels:
        return None
    if color == "L" and channels == 3:
        return None  # Pillow's own luma rounding
    if any(tag in data for tag in _PILLOW_CHUNKS):
        return None  # transparency, or metadata Pillow reads an EXIF orientation from
    if _reduce_factor(width, height, target) >= 2:
        return None  # to_input reduces it first
    try:
        pixels = pyspng.load(data)
    except Exception:  # any refusal: Pillow's path decides, and words the error
        return None
    if pixels.dtype != np.uint8 or pixels.size != width * height * channels:
        return None
    pixels = pixels.reshape(height, width, channels)
    if color == "RGB" and channels == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return pixels.astype(np.float32) / 255.0


def preprocess(
    data: bytes, content_type: str | None, spec: dict[str, Any], max_pixels: int
) -> np.ndarray:
    target = tuple(spec["resize"])
    pixels = simple_png(data, spec["color"], max_pixels, target)
    if pixels is not None:
        return _finish(pixels, spec)
    image = decode(data, content_type, max_pixels, target)
    try:
        return to_input(image, spec)
    except (OSError, SyntaxError, ValueError) as exc:  # e.g. a LAB TIFF has no RGB conversion
        raise BadRequest(
            f"cannot use this {image.format or 'image'} of mode {image.mode} "
            f"({_describe(data, content_type)}): {exc}; send a grayscale, RGB or RGBA image"
        ) from None


def is_raw_image(content_type: str) -> bool:
    """A body that is one image (as opposed to multipart): `image/*` or octet-stream."""
    return content_type.startswith("image/") or content_type == "application/octet-stream"


# Bodies up to this size are decoded on the event loop: a 28x28 PNG takes ~50 us, less than the
# hand-off to a worker thread and back; bigger ones go to a thread.
INLINE_DECODE_BYTES = 16 * 1024


async def preprocess_all(
    uploads: list[tuple[bytes, str | None]], spec: dict[str, Any], max_pixels: int
) -> list[np.ndarray]:
    """Every (bytes, content type) of a request through `preprocess`, in order: on the event
    loop when they are small, in a worker thread otherwise (decoding is CPU work)."""

    def run() -> list[np.ndarray]:
        return [preprocess(data, ctype, spec, max_pixels) for data, ctype in uploads]

    if sum(len(data) for data, _ in uploads) <= INLINE_DECODE_BYTES:
        return run()
    return await asyncio.get_running_loop().run_in_executor(None, run)

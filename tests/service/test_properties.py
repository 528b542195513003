"""Property tests (Hypothesis, in process): whatever a client sends, the decoders answer a
well-formed value or a client error (ServiceError, 4xx), never another exception.

- service.preprocess: arbitrary bytes and content types; valid images of any size, mode and
  format; valid images with bytes flipped, cut or inserted;
- service.oip: arbitrary JSON values, bytes and header lengths; tensors of any shape, datatype
  and binary size; what encode_response writes, parse_request reads back.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from service import oip
from service.errors import BadRequest, NotFound, PayloadTooLarge, ServiceError
from service.oip_model import parse_version
from service.preprocess import decode, preprocess

# Modest: the whole module runs in a few seconds on a small CPU, the same cases every run.
FAST = settings(
    max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
IMAGES = settings(
    max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
MAX_PIXELS = 1_000_000
# What Pillow says (and skips) reading damaged TIFF and EXIF tags.
DAMAGED_METADATA = "ignore::UserWarning:PIL.TiffImagePlugin"
CONTENT_TYPES = st.one_of(
    st.none(),
    st.sampled_from(["image/png", "image/jpeg", "application/octet-stream", "text/plain", ""]),
    st.text(max_size=40),
)
SPECS = st.fixed_dictionaries(
    {
        "color": st.sampled_from(["L", "RGB"]),
        "resize": st.lists(st.integers(1, 32), min_size=2, max_size=2),
        "resample": st.sampled_from(["nearest", "bilinear", "bicubic", "lanczos"]),
        "invert": st.booleans(),
    }
)


def client_error(exc: ServiceError) -> None:
    assert 400 <= exc.status_code < 500, exc
    assert exc.message and "Traceback" not in exc.message


def check_input(x: np.ndarray, spec: dict[str, Any]) -> None:
    channels = 1 if spec["color"] == "L" else 3
    width, height = spec["resize"]
    assert x.shape == (channels, height, width)
    assert x.dtype == np.float32 and x.flags.c_contiguous
    assert np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0


def preprocessed_or_refused(data: bytes, content_type: str | None, spec: dict[str, Any]) -> bool:
    """True when `data` became a model input, False when it was refused with a 4xx."""
    try:
        x = preprocess(data, content_type, spec, MAX_PIXELS)
    except ServiceError as exc:
        client_error(exc)
        return False
    check_input(x, spec)
    return True


# --- images -------------------------------------------------------------------------------------

# Modes Pillow writes in each accepted format (others are skipped by `assume`).
MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F"]
FORMATS = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]


@st.composite
def images(draw: st.DrawFn) -> tuple[bytes, str, str]:
    """(file bytes, format, mode) of a random-pixel image Pillow can write."""
    mode = draw(st.sampled_from(MODES))
    fmt = draw(st.sampled_from(FORMATS))
    width, height = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
    if mode == "PA":
        image = image.convert("P").convert("PA")
    elif mode in ("I;16", "I", "F"):
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        image = Image.fromarray(rng.integers(0, 65536, (height, width)).astype(dtype))
        assert image.mode == mode
    else:
        image = image.convert(mode)
    buffer = io.BytesIO()
    try:
        image.save(buffer, fmt)
    except (OSError, ValueError, KeyError, TypeError):
        assume(False)  # Pillow cannot write this mode in this format
    return buffer.getvalue(), fmt, mode


@IMAGES
@given(images(), SPECS)
def test_valid_images_of_any_size_mode_and_format(
    image: tuple[bytes, str, str], spec: dict[str, Any]
) -> None:
    data, fmt, mode = image
    assert preprocessed_or_refused(data, f"image/{fmt.lower()}", spec), (fmt, mode)


@FAST
@given(st.binary(max_size=2000), CONTENT_TYPES, SPECS)
@example(b"", "image/png", {"color": "L", "resize": [8, 8], "resample": "bilinear"})
@example(b"\x89PNG\r\n\x1a\n", None, {"color": "L", "resize": [8, 8], "resample": "bilinear"})
@example(b"GIF89a", None, {"color": "RGB", "resize": [8, 8], "resample": "bilinear"})
@example(b"\xff\xd8\xff", "image/jpeg", {"color": "L", "resize": [8, 8], "resample": "nearest"})
def test_arbitrary_bytes(data: bytes, content_type: str | None, spec: dict[str, Any]) -> None:
    preprocessed_or_refused(data, content_type, spec)


@st.composite
def mutations(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    edits = st.tuples(
        st.sampled_from(["flip", "cut", "insert"]), st.integers(0, 10**6), st.integers(0, 255)
    )
    return draw(st.lists(edits, min_size=1, max_size=4))


def mutate(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, where, value in edits:
        at = where % (len(out) + 1)
        if kind == "flip" and at < len(out):
            out[at] ^= value or 1
        elif kind == "cut":
            del out[at:]
        else:
            out[at:at] = bytes([value]) * (1 + where % 7)
    return bytes(out)


@IMAGES
@pytest.mark.filterwarnings(DAMAGED_METADATA)
@given(images(), mutations(), SPECS)
def test_damaged_images(
    image: tuple[bytes, str, str], edits: list[tuple[str, int, int]], spec: dict[str, Any]
) -> None:
    data, fmt, _ = image
    preprocessed_or_refused(mutate(data, edits), f"image/{fmt.lower()}", spec)


@st.composite
def exif_images(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """(file, start, end): an image whose EXIF block (orientation and a few tags) lies at
    data[start:end]."""
    fmt = draw(st.sampled_from(["JPEG", "PNG", "WEBP"]))
    exif = Image.Exif()
    exif[0x0112] = draw(st.integers(0, 10))  # orientation: 1-8, and out of range
    exif[0x010F] = draw(st.text(max_size=20))  # make
    exif[0x0131] = "mimo"  # software
    image = Image.new("L", (draw(st.integers(1, 40)), draw(st.integers(1, 40))), 200)
    data = encode_image(image, fmt, exif=exif.tobytes())
    raw = exif.tobytes()[6:]  # after b"Exif\0\0", which PNG and WebP leave out
    start = data.find(raw)
    assume(start >= 0)
    return data, start, start + len(raw)


def encode_image(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@IMAGES
@pytest.mark.filterwarnings(DAMAGED_METADATA)
@given(exif_images(), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6))
def test_damaged_exif(image: tuple[bytes, int, int], edits: list[tuple[int, int]]) -> None:
    """Bytes of the EXIF block flipped: the orientation is applied, ignored or refused (4xx)."""
    data, start, end = image
    out = bytearray(data)
    for where, value in edits:
        out[start + where % (end - start)] = value
    preprocessed_or_refused(
        bytes(out), None, {"color": "L", "resize": [8, 8], "resample": "nearest"}
    )


@FAST
@given(st.integers(1, 5000), st.integers(1, 5000), st.integers(1, 4_000_000))
def test_pixel_limit_is_read_from_the_header(width: int, height: int, limit: int) -> None:
    """A PNG declaring width x height: over the limit it is a 413 before any pixel is read."""
    data = png_header(width, height)
    try:
        decode(data, "image/png", limit)
    except PayloadTooLarge as exc:
        assert width * height > limit
        assert f"{width}x{height}" in exc.message and "MIMO_MAX_IMAGE_PIXELS" in exc.message
    except BadRequest as exc:  # within the limit: the (absent) pixel data is missing
        assert width * height <= limit
        client_error(exc)


def png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# --- the Open Inference Protocol codec ---------------------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=30,
)
KEYS = ["name", "datatype", "shape", "data", "parameters", "binary_data_size", "inputs"]
DATATYPES = [*oip.DTYPES, "FP16", "BYTES", "fp32", ""]
# Anything where the codec looks for something specific, else any JSON value.
SHAPES = st.one_of(
    st.lists(st.integers(0, 4), max_size=5),
    st.lists(
        st.one_of(st.integers(-3, 10**12), st.booleans(), st.floats(), st.text()), max_size=40
    ),
    JSON_VALUES,
)


def parsed_or_refused(body: bytes, header: str | None) -> oip.InferRequest | None:
    try:
        request = oip.parse_request(body, header)
    except BadRequest as exc:
        client_error(exc)
        return None
    assert isinstance(request, oip.InferRequest)
    for datatype, array in request.inputs.values():
        assert datatype in oip.DTYPES and array.dtype == oip.DTYPES[datatype]
    return request


@st.composite
def input_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if draw(st.booleans()):
        spec["name"] = draw(st.one_of(st.just("images"), st.text(max_size=8), JSON_SCALARS))
    if draw(st.integers(0, 9)):
        spec["datatype"] = draw(st.one_of(st.sampled_from(DATATYPES), JSON_SCALARS))
    if draw(st.integers(0, 9)):
        spec["shape"] = draw(SHAPES)
    if draw(st.booleans()):
        spec["data"] = draw(JSON_VALUES)
    if draw(st.booleans()):
        size = st.one_of(st.integers(-2, 64), st.booleans(), JSON_SCALARS)
        spec["parameters"] = draw(
            st.one_of(st.fixed_dictionaries({"binary_data_size": size}), JSON_VALUES)
        )
    return spec


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    request: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        request["inputs"] = draw(st.one_of(st.lists(input_specs(), max_size=3), JSON_VALUES))
    if draw(st.booleans()):
        request["outputs"] = draw(
            st.one_of(
                st.lists(
                    st.fixed_dictionaries(
                        {"name": st.one_of(st.text(max_size=8), JSON_SCALARS)},
                        optional={"parameters": JSON_VALUES},
                    ),
                    max_size=3,
                ),
                JSON_VALUES,
            )
        )
    for key in ("id", "parameters"):
        if draw(st.booleans()):
            request[key] = draw(JSON_VALUES)
    return request


HEADERS = st.one_of(
    st.none(),
    st.integers(0, 400).map(str),
    st.sampled_from(["", "-1", "+5", " 5", "1e3", "0x10", "\u00b2", "\u0663", "9" * 5000]),
    st.text(max_size=8),
)


@FAST
@given(requests(), st.binary(max_size=64), HEADERS)
def test_structured_requests(request: dict[str, Any], binary: bytes, header: str | None) -> None:
    parsed_or_refused(json.dumps(request).encode() + binary, header)


@FAST
@given(requests(), st.binary(max_size=64))
def test_structured_requests_with_a_fitting_header(request: dict[str, Any], binary: bytes) -> None:
    head = json.dumps(request).encode()
    parsed_or_refused(head + binary, str(len(head)))


@FAST
@given(st.binary(max_size=300), HEADERS)
@example(b"\xff\xfe{}", None)
@example(b'{"inputs": []}', "\u00b2")  # a digit to str.isdigit, not to int()
@example(b'{"inputs": []}', "9" * 5000)  # over Python's int() digit limit
@example(b"[" * 10_000, None)
def test_arbitrary_bytes_and_header_lengths(body: bytes, header: str | None) -> None:
    parsed_or_refused(body, header)


@FAST
@given(JSON_VALUES)
def test_arbitrary_json(value: Any) -> None:
    parsed_or_refused(json.dumps(value).encode(), None)


@FAST
@given(
    st.sampled_from(DATATYPES),
    SHAPES,
    st.one_of(st.none(), st.binary(max_size=80)),
    JSON_VALUES,
)
@example("FP32", [False], b"", None)  # bools are ints to isinstance
@example("FP32", [True, 2], b"\0" * 8, None)
@example("UINT8", [1] * 40, b"\0", None)  # more dimensions than numpy's 32
@example("UINT8", [0] * 40, None, [])
def test_tensor(datatype: str, shape: Any, raw: bytes | None, data: Any) -> None:
    """service.oip.tensor, shared by the JSON, binary and gRPC encodings."""
    shape = shape if isinstance(shape, list) else [shape]
    try:
        array = oip.tensor("x", datatype, shape, raw, data)
    except BadRequest as exc:
        client_error(exc)
        return
    assert array.shape == tuple(shape) and array.dtype == oip.DTYPES[datatype]
    if raw is not None:
        assert array.tobytes() == raw


@st.composite
def tensors(draw: st.DrawFn) -> dict[str, np.ndarray]:
    out = {}
    for i in range(draw(st.integers(1, 4))):
        datatype = draw(st.sampled_from(list(oip.DTYPES)))
        dtype = oip.DTYPES[datatype]
        shape = draw(st.lists(st.integers(0, 4), min_size=0, max_size=4))
        count = math.prod(shape)
        if dtype.kind == "b":
            values = draw(st.lists(st.booleans(), min_size=count, max_size=count))
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            values = draw(
                st.lists(st.integers(int(info.min), int(info.max)), min_size=count, max_size=count)
            )
        else:
            width = 32 if dtype.itemsize == 4 else 64
            values = draw(
                st.lists(
                    st.floats(width=width, allow_nan=False, allow_infinity=False),
                    min_size=count,
                    max_size=count,
                )
            )
        out[f"t{i}"] = np.asarray(values, dtype=dtype).reshape(shape)
    return out


@FAST
@given(tensors(), st.data())
def test_encode_response_parse_request_round_trip(
    arrays: dict[str, np.ndarray], data: st.DataObject
) -> None:
    """Outputs written by encode_response, JSON or binary, read back by parse_request."""
    binary = data.draw(st.sets(st.sampled_from(sorted(arrays))))
    body, length = oip.encode_response({"model_name": "m", "id": "7"}, arrays, binary)
    assert (length is None) == (not binary)
    head = json.loads(body[:length] if length is not None else body)
    assert head["model_name"] == "m" and head["id"] == "7"
    assert [o["name"] for o in head["outputs"]] == list(arrays)
    request_head = json.dumps({"inputs": head["outputs"]}).encode()
    request = oip.parse_request(
        request_head + (body[length:] if length is not None else b""),
        str(len(request_head)) if length is not None else None,
    )
    assert list(request.inputs) == list(arrays)
    for name, array in arrays.items():
        datatype, back = request.inputs[name]
        assert datatype == oip.datatype_of(array)
        assert back.dtype == array.dtype and back.shape == array.shape
        np.testing.assert_array_equal(back, array)


@FAST
@given(st.one_of(st.none(), st.text(max_size=12), st.integers(0, 10**6).map(str)))
@example("\u00b2")
@example("9" * 5000)
@example("0")
def test_parse_version(version: str | None) -> None:
    try:
        parsed = parse_version(version)
    except NotFound as exc:
        client_error(exc)
        return
    assert parsed is None or (isinstance(parsed, int) and parsed >= 1)
    if parsed is not None:
        assert str(parsed) == version.lstrip("0")


# --- regressions: found by the properties above (all but binary_data_size true were 500s) ------


def infer_body(shape: Any, size: Any = None) -> bytes:
    spec: dict[str, Any] = {"name": "images", "shape": shape, "datatype": "FP32"}
    spec |= {"parameters": {"binary_data_size": size}} if size is not None else {"data": []}
    return json.dumps({"inputs": [spec]}).encode()


def test_bool_in_a_shape_is_refused() -> None:
    """[false] passed as a shape of ints and numpy's reshape raised TypeError."""
    body = infer_body([False], 0)
    with pytest.raises(BadRequest, match="shape must be non-negative integers"):
        oip.parse_request(body, str(len(body)))


def test_bool_binary_data_size_is_refused() -> None:
    """true counted as 1 byte."""
    body = infer_body([1], True)
    with pytest.raises(BadRequest, match="binary_data_size True"):
        oip.parse_request(body + b"\0" * 4, str(len(body)))


def test_shape_with_more_dimensions_than_numpy_is_refused() -> None:
    with pytest.raises(BadRequest, match="70 dimensions"):
        oip.parse_request(infer_body([0] * 70), None)


@pytest.mark.parametrize("header", ["\u00b2", "9" * 5000, "\u0663", "+5", " 5"])
def test_header_length_must_be_ascii_digits(header: str) -> None:
    """'²' passed str.isdigit() and int() raised; so did 5000 digits (int's digit limit)."""
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length"):
        oip.parse_request(b'{"inputs": []}', header)


@pytest.mark.parametrize("version", ["\u00b2", "9" * 5000, "\u0663"])
def test_version_must_be_ascii_digits(version: str) -> None:
    with pytest.raises(NotFound, match="positive integer"):
        parse_version(version)


def test_damaged_exif_is_ignored_not_a_500() -> None:
    """The first EXIF entry's tag turned from Make (0x010F) into ImageWidth (0x0100), an
    integer tag holding text: ImageOps.exif_transpose raised struct.error rewriting the block
    (a 500). The orientation is still read and applied."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "maker"
    data = bytearray(encode_image(Image.new("L", (16, 8), 200), "JPEG", exif=exif.tobytes()))
    start = bytes(data).find(exif.tobytes()[6:])
    data[start + 11] = 0  # header 8, count 2, tag 0x010F -> 0x0100
    spec = {"color": "L", "resize": [16, 8], "resample": "nearest"}
    x = preprocess(bytes(data), "image/jpeg", spec, MAX_PIXELS)
    assert x.shape == (1, 8, 16) and abs(float(x.mean()) - 200 / 255) < 0.02

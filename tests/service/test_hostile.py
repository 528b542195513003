"""A corpus of hostile requests over real HTTP against /predict and /v2/models/<m>/infer.

Every case gets a 4xx JSON `{"error": ...}` that says what was wrong and what is accepted, or a
correct prediction; no answer carries a traceback or a path of the server. The files are made
here (Pillow, bytes); tests/service/test_preprocess.py holds the in-process corpus of formats and
modes, this one what a real socket adds: raw and multipart bodies, lying headers, chunked and
slow bodies, animation and orientation as the service sees them.
"""

from __future__ import annotations

import io
import json
import select
import socket
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from support import ROOT, SERVICE, free_port, service_env, start_service

MAX_BODY = 256 * 1024
MAX_IMAGES = 8
TIMEOUT_S = 4.0


# --- the server and how its answers are judged --------------------------------------------------


class Server:
    def __init__(self, url: str, port: int, forbidden: list[str]) -> None:
        self.url = url
        self.port = port
        self.forbidden = forbidden  # strings no answer may contain
        self.client = httpx.Client(base_url=url, timeout=30)

    def predict(self, data: bytes, ctype: str = "image/png", **params: Any) -> httpx.Response:
        return self.client.post(
            "/predict", content=data, headers={"content-type": ctype}, params=params
        )

    def error(self, response: httpx.Response, status: int | tuple[int, ...], *words: str) -> str:
        """The message of a JSON error answer with this status, checked for leaks and `words`."""
        statuses = (status,) if isinstance(status, int) else status
        assert response.status_code in statuses, (response.status_code, response.text[:500])
        assert response.headers["content-type"].startswith("application/json"), response.headers
        body = response.json()
        assert list(body) == ["error"] and isinstance(body["error"], str), body
        self.clean(response.text)
        for word in words:
            assert word in body["error"], (word, body["error"])
        return body["error"]

    def clean(self, text: str) -> None:
        assert "Traceback" not in text and 'File "' not in text, text
        for path in self.forbidden:
            assert path not in text, (path, text)

    def probabilities(self, response: httpx.Response) -> np.ndarray:
        assert response.status_code == 200, response.text
        self.clean(response.text)
        out = []
        for p in response.json()["predictions"]:
            row = np.zeros(10)
            for entry in p["top_k"]:
                row[entry["index"]] = entry["probability"]
            out.append(row)
        return np.asarray(out)


@pytest.fixture(scope="module")
def server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    log = tmp_path_factory.mktemp("hostile-server") / "server.log"
    env = service_env(
        model_repository,
        port,
        MIMO_GRPC_PORT="0",
        MIMO_MAX_BODY_BYTES=str(MAX_BODY),
        MIMO_MAX_IMAGES_PER_REQUEST=str(MAX_IMAGES),
        MIMO_REQUEST_TIMEOUT_S=str(TIMEOUT_S),
    )
    service = start_service(SERVICE, env, ROOT, log)
    forbidden = [str(model_repository), str(ROOT), sys.prefix, tempfile.gettempdir() + "/"]
    forbidden.append(str(Path.home()) + "/")
    s = Server(f"http://127.0.0.1:{port}", port, forbidden)
    try:
        yield s
    finally:
        s.client.close()
        service.stop()
    output = log.read_text(errors="replace")
    assert "Traceback" not in output, output[-4000:]  # every 500 leaves one in the log


# --- files -------------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_declaring(width: int, height: int, extra: bytes = b"") -> bytes:
    """A tiny PNG whose header declares width x height (8-bit gray), with `extra` chunks."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 9 * 8)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + extra
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def gif_declaring(width: int, height: int) -> bytes:
    """A GIF whose logical screen and only frame are width x height, with one pixel of data."""
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + frame + b";"


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real 8x8 JPEG whose frame header (SOF0) is rewritten to declare width x height."""
    data = bytearray(encode(Image.new("L", (8, 8), 128), "JPEG"))
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bmp_declaring(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("L", (4, 4), 128), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


@pytest.fixture(scope="module")
def digits(digit_pngs: list[tuple[bytes, int]]) -> list[np.ndarray]:
    """The 8x8 uint8 pixels of 20 real digits, upscaled to 64 x 64 (JPEG needs the room)."""
    out = []
    for data, _ in digit_pngs:
        pixels = np.asarray(Image.open(io.BytesIO(data)))
        out.append(np.kron(pixels, np.ones((8, 8), np.uint8)))
    return out


def gray_png(pixels: np.ndarray) -> bytes:
    return encode(Image.fromarray(pixels), "PNG")


# --- images that must be answered, and answered right -------------------------------------------


def reference(server: Server, pixels: np.ndarray) -> np.ndarray:
    return server.probabilities(server.predict(gray_png(pixels), top_k=10))[0]


def confident_pair(server: Server, digits: list[np.ndarray]) -> tuple[int, int]:
    """Two digits the model tells apart with confidence."""
    answers = [reference(server, d) for d in digits]
    for i, a in enumerate(answers):
        for j, b in enumerate(answers):
            if a.max() > 0.6 and b.max() > 0.6 and a.argmax() != b.argmax():
                return i, j
    raise AssertionError("no two confident digits of different classes")


def test_sixteen_bit_png(server: Server, digits: list[np.ndarray]) -> None:
    pixels = digits[0]
    deep = Image.fromarray(pixels.astype(np.uint16) * 257)  # 255 -> 65535
    data = encode(deep, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    got = server.probabilities(server.predict(data, top_k=10))[0]
    np.testing.assert_allclose(got, reference(server, pixels), atol=1e-4)


def test_cmyk_jpeg(server: Server, digits: list[np.ndarray]) -> None:
    pixels = digits[1]
    cmyk = Image.fromarray(pixels).convert("RGB").convert("CMYK")
    data = encode(cmyk, "JPEG", quality=98)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    got = server.probabilities(server.predict(data, "image/jpeg", top_k=10))[0]
    want = reference(server, pixels)
    assert got.argmax() == want.argmax()
    np.testing.assert_allclose(got, want, atol=0.1)


def test_palette_with_transparency(server: Server, digits: list[np.ndarray]) -> None:
    """A palette image whose background entry is white but transparent: transparent is ink-free
    black, so it reads as the same digit on black."""
    pixels = digits[2]
    levels = np.unique(pixels)
    assert levels[0] == 0 and len(levels) < 255
    index = np.searchsorted(levels, pixels).astype(np.uint8) + 1  # entry 0 left for the background
    image = Image.fromarray(index, "L").convert("P")
    image.putpalette([255, 255, 255] + [int(v) for v in levels for _ in range(3)])
    image.paste(0, mask=Image.fromarray(((pixels == 0) * 255).astype(np.uint8)))
    for fmt in ("PNG", "GIF"):
        data = encode(image, fmt, transparency=0)
        decoded = Image.open(io.BytesIO(data))
        assert decoded.mode == "P" and decoded.info.get("transparency") == 0
        got = server.probabilities(server.predict(data, f"image/{fmt.lower()}", top_k=10))[0]
        np.testing.assert_allclose(got, reference(server, pixels), atol=1e-4, err_msg=fmt)


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("GIF", {}), ("PNG", {}), ("WEBP", {"lossless": True})],
    ids=["gif", "apng", "webp"],
)
def test_animation_answers_the_first_frame(
    server: Server, digits: list[np.ndarray], fmt: str, options: dict
) -> None:
    first, second = confident_pair(server, digits)
    frames = [Image.fromarray(digits[first]), Image.fromarray(digits[second])]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, **options)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    got = server.probabilities(server.predict(data, f"image/{fmt.lower()}", top_k=10))[0]
    want = reference(server, digits[first])
    assert got.argmax() == want.argmax()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_exif_rotated_jpeg_is_seen_upright(server: Server, digits: list[np.ndarray]) -> None:
    """The pixels are stored turned a quarter; the EXIF tag says how to turn them back. The
    answer must be that of the upright digit, not of the stored pixels."""

    def turned(pixels: np.ndarray) -> np.ndarray:
        return np.rot90(pixels, k=1).copy()  # counter-clockwise: orientation 6 undoes it

    def jpeg(pixels: np.ndarray, exif: Image.Exif | None = None) -> bytes:
        image = Image.fromarray(pixels)
        return encode(image, "JPEG", quality=98, **({"exif": exif} if exif else {}))

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    for pixels in digits:
        upright = server.probabilities(server.predict(jpeg(pixels), "image/jpeg", top_k=10))[0]
        stored = turned(pixels)
        plain = server.probabilities(server.predict(jpeg(stored), "image/jpeg", top_k=10))[0]
        if upright.max() < 0.6 or plain.argmax() == upright.argmax():
            continue  # not a digit whose turn changes the answer
        tagged = jpeg(stored, exif)
        got = server.probabilities(server.predict(tagged, "image/jpeg", top_k=10))[0]
        assert got.argmax() == upright.argmax()
        np.testing.assert_allclose(got, upright, atol=0.05)
        return
    raise AssertionError("no digit whose quarter turn changes the answer")


def test_extreme_aspect_ratio(server: Server) -> None:
    strip = np.zeros((1, 20000), np.uint8)
    strip[0, ::2] = 255
    answer = server.predict(gray_png(strip))
    assert answer.status_code == 200, answer.text


def test_multipart_with_a_field_beside_the_file(server: Server, digits: list[np.ndarray]) -> None:
    answer = server.client.post(
        "/predict",
        data={"note": "hello"},
        files=[("file", ("a.png", gray_png(digits[0]), "image/png"))],
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["filename"] == "a.png"


# --- images that must be refused -------------------------------------------------------------


def noise_png() -> bytes:
    return gray_png(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))


def noise_jpeg() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "JPEG")


def ico() -> bytes:
    return encode(Image.new("RGBA", (16, 16), (255, 0, 0, 255)), "ICO")


def ztxt_bomb() -> bytes:
    """A valid 8x8 PNG with a compressed text chunk that inflates to 64 MB."""
    text = png_chunk(b"zTXt", b"comment\0\0" + zlib.compress(b"\0" * (64 << 20), 9))
    return png_declaring(8, 8, text)


PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8"/></svg>'
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nnewpath 0 0 moveto 8 8 lineto stroke\n"


def bomb(pixels: str) -> tuple[str, ...]:
    return (f"declares {pixels} pixels", "16,000,000 (MIMO_MAX_IMAGE_PIXELS)")


REFUSED: dict[str, tuple[Any, int, tuple[str, ...]]] = {
    # case: (bytes or a function making them, status, words of the message)
    "truncated-png": (lambda: noise_png()[:300], 400, ("PNG", "truncated")),
    "truncated-jpeg": (lambda: noise_jpeg()[:400], 400, ("JPEG", "truncated")),
    "png-signature-only": (b"\x89PNG\r\n\x1a\n", 400, ("expected an image", "PNG, JPEG")),
    "empty": (b"", 400, ("empty body", "PNG, JPEG")),
    "png-100000x100000": (lambda: png_declaring(100000, 100000), 413, bomb("10,000,000,000")),
    "gif-65535x65535": (lambda: gif_declaring(65535, 65535), 413, bomb("4,294,836,225")),
    "jpeg-65500x65500": (lambda: jpeg_declaring(65500, 65500), 413, bomb("4,290,250,000")),
    "bmp-30000x30000": (lambda: bmp_declaring(30000, 30000), 413, bomb("900,000,000")),
    "png-5000x5000": (lambda: png_declaring(5000, 5000), 413, ("5000x5000", "16,000,000")),
    "ztxt-bomb": (ztxt_bomb, 400, ("too large",)),
    "wrong-magic": (lambda: b"\x88" + noise_png()[1:], 400, ("expected an image",)),
    "jpeg-magic-then-garbage": (b"\xff\xd8\xff\xe0" + b"\x00" * 64, 400, ("image",)),
    "pdf": (PDF, 400, ("expected an image", f"{len(PDF)} bytes of image/png")),
    "svg": (SVG, 400, ("expected an image", "PNG, JPEG, GIF, BMP, TIFF or WebP")),
    "eps": (EPS, 400, ("expected an image",)),
    "ico": (ico, 400, ("expected an image",)),
    "text": (b"hello, world\n", 400, ("expected an image",)),
    "html": (b"<html><body>hi</body></html>", 400, ("expected an image",)),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_files(server: Server, case: str) -> None:
    make, status, words = REFUSED[case]
    data = make() if callable(make) else make
    assert len(data) < 100_000
    started = time.perf_counter()
    server.error(server.predict(data, "image/png"), status, *words)
    assert time.perf_counter() - started < 5  # refused from the header, nothing decoded
    # The same file as a multipart part: the same refusal.
    files = [("file", ("x.png", data, "image/png"))]
    server.error(server.client.post("/predict", files=files), status, *words)


# --- multipart ----------------------------------------------------------------------------------


def test_hundreds_of_parts(server: Server, digits: list[np.ndarray]) -> None:
    one = gray_png(digits[0])
    files = [("file", (f"{i}.png", one, "image/png")) for i in range(300)]
    message = server.error(server.client.post("/predict", files=files), 400)
    assert f"{MAX_IMAGES}" in message and "MIMO_MAX_IMAGES_PER_REQUEST" in message, message
    just_over = files[: MAX_IMAGES + 1]
    message = server.error(server.client.post("/predict", files=just_over), 400)
    assert "MIMO_MAX_IMAGES_PER_REQUEST" in message
    answer = server.client.post("/predict", files=files[:MAX_IMAGES])
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == MAX_IMAGES


def test_hundreds_of_fields(server: Server) -> None:
    fields = {f"f{i}": "x" for i in range(300)}
    server.error(server.client.post("/predict", data=fields, files={"x": b"1"}), 400)


def multipart(parts: list[bytes], boundary: str = "b0undary") -> tuple[bytes, str]:
    body = b"".join(f"--{boundary}\r\n".encode() + p + b"\r\n" for p in parts)
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(
    ("parts", "words"),
    [
        ([], ("without a `file` part", "none")),
        ([b'Content-Disposition: form-data; name="file"\r\n\r\nnot a file'], ("`file`",)),
        ([b'Content-Disposition: form-data; name="image"; filename="a.png"\r\n\r\nx'], ("image",)),
    ],
    ids=["no-parts", "file-as-a-text-field", "wrong-part-name"],
)
def test_multipart_without_an_image(server: Server, parts: list[bytes], words: tuple) -> None:
    body, ctype = multipart(parts)
    server.error(server.predict(body, ctype), 400, *words)


@pytest.mark.parametrize(
    "body",
    [b"", b"--b0undary\r\n", b"garbage", b"--other\r\n\r\n--other--\r\n"],
    ids=["empty", "unterminated", "garbage", "other-boundary"],
)
def test_malformed_multipart(server: Server, body: bytes) -> None:
    server.error(server.predict(body, "multipart/form-data; boundary=b0undary"), 400)


def test_multipart_without_a_boundary(server: Server) -> None:
    server.error(server.predict(b"--x\r\n", "multipart/form-data"), 400)


# --- query parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"top_k": "0"}, 400, ("top_k",)),
        ({"top_k": "abc"}, 400, ("top_k",)),
        ({"top_k": "1e3"}, 400, ("top_k",)),
        ({"top_k": "1001"}, 400, ("top_k",)),
        ({"version": "0"}, 400, ("version",)),
        ({"version": "-1"}, 400, ("version",)),
        ({"version": "one"}, 400, ("version",)),
        ({"version": "9" * 5000}, (400, 404), ("version",)),
        ({"version": "\u00b2"}, 400, ("version",)),
        ({"members": "maybe"}, 400, ("members",)),
        ({"model": "../../etc/passwd"}, 404, ("unknown model",)),
        ({"model": "nope\x00"}, 404, ("unknown model",)),
        ({"model": "x" * 10000}, 404, ("unknown model",)),
        ({"model": "\u00e9\u00e8"}, 404, ("unknown model",)),
        ({"version": "7"}, 404, ("no version 7",)),
    ],
)
def test_bad_query_parameters(
    server: Server, digits: list[np.ndarray], params: dict, status: Any, words: tuple
) -> None:
    message = server.error(server.predict(gray_png(digits[0]), **params), status, *words)
    assert len(message) < 2000


def test_unknown_and_repeated_parameters(server: Server, digits: list[np.ndarray]) -> None:
    answer = server.client.post(
        "/predict?top_k=2&top_k=3&colour=blue",
        content=gray_png(digits[0]),
        headers={"content-type": "image/png"},
    )
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"][0]["top_k"]) == 3  # the last one wins


# --- bodies: chunked, over the limit, slow -------------------------------------------------------


def chunks(size: int, piece: int = 16384) -> Iterator[bytes]:
    sent = 0
    while sent < size:
        yield b"\0" * min(piece, size - sent)
        sent += piece


@pytest.mark.parametrize("path", ["/predict", "/v2/models/digits/infer"])
def test_chunked_body_over_the_limit(server: Server, path: str) -> None:
    response = server.client.post(
        path, content=chunks(MAX_BODY + 100_000), headers={"content-type": "image/png"}
    )
    server.error(response, 413, "MIMO_MAX_BODY_BYTES")


def test_announced_body_over_the_limit(server: Server) -> None:
    response = server.predict(b"\0" * (MAX_BODY + 1))
    server.error(response, 413, f"{MAX_BODY + 1} bytes", "MIMO_MAX_BODY_BYTES")


def raw_request(
    server: Server, head: bytes, body_parts: list[bytes], pause: float = 0.0, timeout: float = 30
) -> tuple[int, dict[str, str], bytes]:
    """Send `head` then each of `body_parts` (pausing between), and read the answer; stop
    sending once the answer starts (as a client does when it is refused early)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(head)
        for part in body_parts:
            if pause:
                time.sleep(pause)
            if select.select([sock], [], [], 0)[0]:
                break  # answered before the body was all sent
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = b""
        while chunk := sock.recv(65536):  # "Connection: close": the server ends it
            answer += chunk
    head_bytes, _, body = answer.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), answer[:200]
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        body = b"".join(unchunked(body))
    return status, headers, body


def unchunked(body: bytes) -> Iterator[bytes]:
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            return
        yield rest[:n]
        body = rest[n + 2 :]


def post_head(path: str, ctype: str, length: int | None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Type: {ctype}", "Connection: close"]
    length_header = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    lines.append(length_header)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def as_chunks(parts: list[bytes]) -> list[bytes]:
    return [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts] + [b"0\r\n\r\n"]


def drip(data: bytes, pieces: int) -> list[bytes]:
    step = -(-len(data) // pieces)
    return [data[i : i + step] for i in range(0, len(data), step)]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_slow_drip_within_the_timeout_is_answered(
    server: Server, digits: list[np.ndarray], chunked: bool
) -> None:
    """A valid PNG sent in 12 pieces 0.1 s apart (1.2 s, under MIMO_REQUEST_TIMEOUT_S)."""
    data = gray_png(digits[0])
    parts = drip(data, 12)
    head = post_head("/predict?top_k=10", "image/png", None if chunked else len(data))
    status, _, body = raw_request(server, head, as_chunks(parts) if chunked else parts, 0.1)
    assert status == 200, body
    got = json.loads(body)["predictions"][0]
    want = reference(server, digits[0])
    assert got["index"] == int(want.argmax())


def test_slow_drip_infer_is_answered(server: Server, digits: list[np.ndarray]) -> None:
    x = (digits[0][::8, ::8].astype(np.float32) / 255.0).reshape(1, 1, 8, 8)
    request = {"inputs": [{"name": "images", "shape": [1, 1, 8, 8], "datatype": "FP32"}]}
    request["inputs"][0]["data"] = x.ravel().tolist()
    data = json.dumps(request).encode()
    head = post_head("/v2/models/digits/infer", "application/json", len(data))
    status, _, body = raw_request(server, head, drip(data, 10), 0.1)
    assert status == 200, body
    assert json.loads(body)["model_name"] == "digits"


@pytest.mark.parametrize("path", ["/predict", "/v2/models/digits/infer"])
def test_slow_drip_past_the_timeout_is_refused(server: Server, path: str) -> None:
    """A body still arriving after MIMO_REQUEST_TIMEOUT_S: 408, and the connection closed,
    without waiting for the rest (a client that drips for ever holds nothing for long)."""
    if path == "/predict":
        data, ctype = noise_png(), "image/png"
    else:
        data, ctype = tensor_request([1, 1, 8, 8], data=[0.5] * 64), "application/json"
    head = post_head(path, ctype, len(data))
    started = time.monotonic()
    parts = drip(data, 60)  # 60 pieces, 0.25 s apart: 15 s if it were all read
    status, headers, body = raw_request(server, head, parts, 0.25)
    elapsed = time.monotonic() - started
    assert status == 408, body
    assert elapsed < TIMEOUT_S + 3, elapsed
    assert headers.get("connection") == "close"
    message = json.loads(body)["error"]
    assert "MIMO_REQUEST_TIMEOUT_S" in message, message
    server.clean(body.decode())


@pytest.mark.parametrize(
    ("path", "ctype", "endpoint"),
    [
        ("/predict", "image/png", "/predict"),  # the fast path
        ("/predict", "multipart/form-data; boundary=b", "/predict"),  # the route
        ("/v2/models/digits/infer", "application/json", "/v2/models/infer"),
    ],
    ids=["raw", "multipart", "infer"],
)
def test_body_shorter_than_announced(server: Server, path: str, ctype: str, endpoint: str) -> None:
    """Content-Length promises more than comes before the client leaves: no answer can reach
    it, and it is no server error (499 in the metrics, not 500; no traceback in the log)."""
    gone = f'mimo_requests_total{{endpoint="{endpoint}",status="499"}}'

    def count() -> float:
        lines = server.client.get("/metrics").text.splitlines()
        assert not [line for line in lines if 'status="500"' in line]
        return sum(float(line.split()[-1]) for line in lines if line.startswith(gone))

    before = count()
    head = post_head(path, ctype, 10_000)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + b"--b\r\nContent-Disposition: form-data; name=")
        time.sleep(0.2)
    time.sleep(0.5)
    assert count() == before + 1, "the 499 was not counted"


@pytest.mark.parametrize(
    "header",
    [b"Content-Length: " + b"9" * 5000, b"Content-Length: -1", b"Content-Length: 1, 2"],
    ids=["5000-digits", "negative", "list"],
)
def test_malformed_content_length(server: Server, header: bytes) -> None:
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n" + header
    # No body: the header alone is refused, and bytes sent after the server's answer and close
    # make its kernel reset the connection, which can drop the answer before it is read (seen
    # on a loaded machine).
    status, _, body = raw_request(server, head + b"\r\n\r\n", [])
    assert 400 <= status < 500, (status, body)
    server.clean(body.decode("latin-1"))


# --- the Open Inference Protocol --------------------------------------------------------------


def infer(server: Server, body: bytes, **headers: str) -> httpx.Response:
    return server.client.post(
        "/v2/models/digits/infer",
        content=body,
        headers={"content-type": "application/json", **headers},
    )


def tensor_request(shape: list[int], size: int | None = None, **extra: Any) -> bytes:
    spec: dict[str, Any] = {"name": "images", "shape": shape, "datatype": "FP32", **extra}
    if size is not None:
        spec["parameters"] = {"binary_data_size": size}
    return json.dumps({"inputs": [spec]}).encode()


INFER_REFUSED: dict[str, tuple[bytes, dict[str, str], int, tuple[str, ...]]] = {
    "empty": (b"", {}, 400, ("not valid JSON",)),
    "not-utf8": (b'{"inputs": "\xff\xfe"}', {}, 400, ("not valid JSON",)),
    "nan-literal": (
        tensor_request([1, 1, 8, 8], data=[float("nan")] * 64),
        {},
        400,
        ("NaN",),
    ),
    "huge-shape-little-data": (
        tensor_request([100000, 1, 8, 8], data=[0.5] * 64),
        {},
        400,
        ("64 values", "6400000 expected"),
    ),
    "deep-nesting": (b'{"inputs": ' + b"[" * 50000 + b"]" * 50000 + b"}", {}, 400, ("JSON",)),
    "truncated-binary": (
        tensor_request([1, 1, 8, 8], 256) + b"\0" * 100,
        {"Inference-Header-Content-Length": str(len(tensor_request([1, 1, 8, 8], 256)))},
        400,
        ("binary_data_size 256", "100 binary bytes"),
    ),
    "header-past-body": (b"{}", {"Inference-Header-Content-Length": "99"}, 400, ("does not fit",)),
    "header-not-a-number": (b"{}", {"Inference-Header-Content-Length": "x"}, 400, ("x",)),
    "batch-over-the-limit": (
        tensor_request([MAX_IMAGES + 1, 1, 8, 8], data=[0.5] * 64 * (MAX_IMAGES + 1)),
        {},
        400,
        ("batch of 9 images", "send 1 to 8"),
    ),
    "empty-batch": (tensor_request([0, 1, 8, 8], data=[]), {}, 400, ("batch of 0",)),
    "bool-shape": (tensor_request([True, 1, 8, 8], data=[0.5] * 64), {}, 400, ("shape",)),
}


@pytest.mark.parametrize("case", list(INFER_REFUSED))
def test_infer_refusals(server: Server, case: str) -> None:
    body, headers, status, words = INFER_REFUSED[case]
    server.error(infer(server, body, **headers), status, *words)


@pytest.mark.parametrize("version", ["\u00b2", "9" * 5000, "0", "-1", "1.0"])
def test_infer_bad_version(server: Server, version: str) -> None:
    answer = server.client.post(
        f"/v2/models/digits/versions/{version}/infer", content=tensor_request([1, 1, 8, 8])
    )
    server.error(answer, 404, "version")

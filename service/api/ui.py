"""GET /: a page to try the service in a browser (service/static/, no build step, offline).

The page is static: it calls /models and /predict like any other client, so it needs no API
key to load (the key, when the server wants one, is typed into the page). Only the files
shipped in service/static/ are served, looked up by name: no path ever reaches the disk.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from service.errors import NotFound
from service.preprocess import IMAGE_FORMATS, MEDIA_TYPES

STATIC = Path(__file__).resolve().parents[1] / "static"
MEDIA_TYPES_BY_SUFFIX = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
# Everything the page loads comes from this server; nothing runs inline or from elsewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files that change with the package: revalidate rather than serve a stale page.
    "Cache-Control": "no-cache",
}


def _files() -> dict[str, Path]:
    """Servable files by their path under static/ ('app.js', 'examples/clear.png')."""
    if not STATIC.is_dir():
        return {}
    return {
        path.relative_to(STATIC).as_posix(): path
        for path in STATIC.rglob("*")
        if path.is_file() and path.suffix in MEDIA_TYPES_BY_SUFFIX
    }


FILES = _files()
router = APIRouter(include_in_schema=False)


def _serve(name: str) -> FileResponse:
    path = FILES.get(name)
    if path is None:
        raise NotFound(f"no such file: /static/{name}")
    return FileResponse(
        path, media_type=MEDIA_TYPES_BY_SUFFIX[path.suffix], headers=SECURITY_HEADERS
    )


def _page() -> bytes:
    """index.html with the accepted image formats filled in from service.preprocess."""
    path = FILES.get("index.html")
    if path is None:
        return b""
    text = path.read_text(encoding="utf-8")
    text = text.replace("{{formats}}", ", ".join(IMAGE_FORMATS))
    return text.replace("{{media_types}}", ",".join(MEDIA_TYPES)).encode()


PAGE = _page()
# The page changes with the package: a browser revalidates it (Cache-Control: no-cache) against
# this, as FileResponse's ETag lets it for the other files.
PAGE_ETAG = f'"{hashlib.sha256(PAGE).hexdigest()[:32]}"'


@router.get("/")
def page(request: Request) -> Response:
    """The page (index.html)."""
    if not PAGE:
        raise NotFound("no page: service/static/index.html is missing from this install")
    headers = {**SECURITY_HEADERS, "ETag": PAGE_ETAG}
    if PAGE_ETAG in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(PAGE, media_type=MEDIA_TYPES_BY_SUFFIX[".html"], headers=headers)


@router.get("/static/{name:path}")
def static(name: str, request: Request) -> Response:
    """The page's scripts, style and example images."""
    return page(request) if name == "index.html" else _serve(name)

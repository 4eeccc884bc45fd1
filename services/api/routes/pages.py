"""The browser pages: ``/`` (upload and compare) and ``/dashboard`` (operators).

Plain HTML, CSS and JavaScript shipped in the package (``services/web``): no build
step, no CDN. The pages call the same REST API as every client; the app's root path
goes into a ``<base>`` tag, so they work behind an ingress path prefix too.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from services.errors import PixserveError

router = APIRouter(tags=["pages"], include_in_schema=False)
_ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
_WEB = resources.files("services.web")


class AssetNotFound(PixserveError):
    code = "not_found"
    status = 404


@router.get("/")
async def upload_page(request: Request) -> HTMLResponse:
    return _page("index.html", request)


@router.get("/dashboard")
async def dashboard_page(request: Request) -> HTMLResponse:
    return _page("dashboard.html", request)


@router.get("/favicon.ico")
async def favicon() -> Response:
    """The icon browsers ask for on their own (an SVG; the pages link it too)."""
    return await asset("favicon.svg")


@router.get("/assets/{name}")
async def asset(name: str) -> Response:
    """One of the pages' scripts or styles (only the files shipped, by name)."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    entry = _WEB.joinpath(name)
    if "/" in name or suffix not in _ASSET_TYPES or not entry.is_file():
        raise AssetNotFound(f"no asset {name!r}")
    return Response(
        entry.read_bytes(),
        media_type=_ASSET_TYPES[suffix],
        headers={"Cache-Control": "no-cache"},
    )


def _page(name: str, request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "").rstrip("/")
    html = _WEB.joinpath(name).read_text().replace("{{BASE}}", f"{root}/")
    return HTMLResponse(html, headers={"Cache-Control": "no-cache"})

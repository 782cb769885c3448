"""The reviewer's page: one HTML page at ``/`` with its script and style sheet under ``/ui/static/``, all shipped
in this package (no CDN, no build step). The page is plain JavaScript that calls the JSON API with the key the
reader signs in with, so it can do exactly what that key's role allows and nothing more. The overview's charts
are drawn with Chart.js, committed here as npm publishes it (``chart.umd.min.js``; its version, origin and
licence in ``chart.js.LICENSE.txt``, which is served too).

The page gets its own Content-Security-Policy (``api/app.py``: ``PAGE_CSP``): scripts, styles and requests only
from this server, no inline script, no eval. These routes are not part of the API's OpenAPI document.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.errors import NotFound

STATIC = Path(__file__).parent / "static"
PREFIX = "/ui/static/"
ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8",
          "favicon.svg": "image/svg+xml",
          # Chart.js, the overview's charts: the upstream build as published, and its licence beside it.
          "chart.umd.min.js": "text/javascript; charset=utf-8", "chart.js.LICENSE.txt": "text/plain; charset=utf-8"}



def is_page(path: str) -> bool:
    """Whether a request path is the page or one of its assets (they get the page's policy, not the API's)."""
    return path == "/" or path.startswith(PREFIX)


@cache
def _read(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def page(request: Request) -> Response:
    return Response(_read("index.html"), media_type="text/html; charset=utf-8")


def asset(request: Request) -> Response:
    name = request.path_params["name"]
    media = ASSETS.get(name)
    if media is None:
        raise NotFound(f"no asset {name!r}")
    return Response(_read(name), media_type=media, headers={"Cache-Control": "no-cache"})


# Plain routes, not API operations: they take no key, answer no JSON, and stay out of the OpenAPI document.
router = APIRouter(routes=[Route("/", page, methods=["GET"], include_in_schema=False),
                           Route(PREFIX + "{name}", asset, methods=["GET"], include_in_schema=False)])

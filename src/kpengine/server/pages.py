"""The web pages: the annotation tool (``/annotate``), the explorer (``/explore``) and the
admins' verification page (``/verify``; the page is static, its API calls need an admin token).

They are built from ``web/`` (TypeScript + three.js) into ``web/dist`` by
``scripts/setup_system.sh`` (``npm ci && npm run build``); the server only serves the
built files. ``KPENGINE_WEB_DIST`` points elsewhere when kpengine is installed without
its source tree.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

WEB_DIST_ENV = "KPENGINE_WEB_DIST"


def web_dist() -> Path:
    env = os.environ.get(WEB_DIST_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[3] / "web" / "dist"


_MISSING = """<!doctype html><meta charset="utf-8"><title>kpengine</title>
<body style="font-family:sans-serif;max-width:40em;margin:3em auto">
<h1>The web pages are not built</h1>
<p>Expected them in <code>{dist}</code>. Build them with <code>scripts/setup_system.sh</code>
(or <code>cd web && npm ci && npm run build</code>). The API works meanwhile: <a href="/docs">/docs</a>.</p>"""


def mount_pages(app: FastAPI, dist: Path | None = None) -> None:
    dist = dist or web_dist()
    router = APIRouter(include_in_schema=False)

    def page(name: str):  # noqa: ANN202
        def serve() -> Response:
            path = dist / f"{name}.html"
            if not path.is_file():
                return HTMLResponse(_MISSING.format(dist=dist), status_code=503)
            return FileResponse(path, headers={"Cache-Control": "no-cache"})

        return serve

    router.add_api_route("/annotate", page("annotate"), methods=["GET"], response_model=None)
    router.add_api_route("/explore", page("explore"), methods=["GET"], response_model=None)
    router.add_api_route("/photo", page("photo"), methods=["GET"], response_model=None)  # `understand` output
    router.add_api_route("/verify", page("verify"), methods=["GET"], response_model=None)  # admin token in the page
    router.add_api_route("/", lambda: RedirectResponse("/explore"), methods=["GET"], response_model=None)
    # browsers ask for /favicon.ico on pages without an icon link (e.g. /docs)
    router.add_api_route(
        "/favicon.ico", lambda: RedirectResponse("/assets/favicon.svg"), methods=["GET"], response_model=None
    )
    app.include_router(router)
    assets = dist / "assets"
    if assets.is_dir():
        app.mount("/assets", StaticFiles(directory=assets), name="assets")

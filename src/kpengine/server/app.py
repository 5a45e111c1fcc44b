"""The application factory: ``create_app(ServerConfig(db_url=...))``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError

from kpengine import __version__
from kpengine.server.api import router
from kpengine.server.auth import AnnotatorCache
from kpengine.server.explore import PREDICTIONS_PATH
from kpengine.server.explore import router as explore_router
from kpengine.server.faults import WriteProbe, describe
from kpengine.server.geometry import GeometryCache
from kpengine.server.guard import GuardMiddleware, TokenThrottle
from kpengine.server.limits import BodyLimitMiddleware
from kpengine.server.pages import mount_pages
from kpengine.server.suggest import router as suggest_router
from kpengine.server.verify import router as verify_router
from kpengine.store.db import Store, open_store


@dataclass
class ServerConfig:
    """Everything the server needs; the CLI fills it from its options.

    ``tolerance`` is in model units (ShapeNet models have a bounding-box diagonal of 1):
    a click farther than this from the surface is refused.
    """

    db_url: str | None = None
    tolerance: float = 0.005
    max_body: int = 64 * 1024
    max_import_body: int = 64 * 1024 * 1024
    web_dist: Path | None = None
    pool_size: int = 20
    #: unknown tokens one client address may send per ``token_window`` seconds before 429
    token_failures: int = 20
    token_window: float = 60.0
    #: where the explorer lists predictions files (runs' outputs) to open by name
    runs_dir: Path | None = None
    store: Store | None = field(default=None, repr=False)


def _validation_message(exc: RequestValidationError) -> str:
    """One readable line per problem, e.g. ``keypoints.3.xyz.0: Input should be a finite number``."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        lines.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(lines)


#: Read by :func:`app_from_env` (with ``KPENGINE_DB``) in each worker of ``kpengine serve --workers N``.
TOLERANCE_ENV = "KPENGINE_TOLERANCE"
RUNS_ENV = "KPENGINE_RUNS"


def app_from_env() -> FastAPI:
    """The app of one uvicorn worker process: database URL, tolerance and runs folder from the environment."""
    import os

    runs = os.environ.get(RUNS_ENV)
    return create_app(
        ServerConfig(tolerance=float(os.environ.get(TOLERANCE_ENV, "0.005")), runs_dir=Path(runs) if runs else None)
    )


def create_app(config: ServerConfig | None = None) -> FastAPI:
    config = config or ServerConfig()
    app = FastAPI(
        title="kpengine",
        version=__version__,
        description="The kpengine keypoint knowledge store: browse models and aggregated keypoints, "
        "annotate with a token, import and export KeypointNet files (admin).",
    )
    app.state.config = config
    app.state.store = config.store or open_store(config.db_url, pool_size=config.pool_size)
    app.state.geometry = GeometryCache()
    app.state.write_probe = WriteProbe(app.state.store)
    app.state.token_throttle = TokenThrottle(config.token_failures, config.token_window)
    app.state.annotators = AnnotatorCache()
    app.add_middleware(
        BodyLimitMiddleware,
        default=config.max_body,
        overrides=[("/api/admin/import", config.max_import_body), (PREDICTIONS_PATH, config.max_import_body)],
    )
    app.add_middleware(GuardMiddleware)  # added last: runs first, and heads every answer

    @app.exception_handler(DBAPIError)
    async def _storage_fault(request: Request, exc: DBAPIError) -> JSONResponse:
        """A driver error: 503 with what is wrong; the transaction was rolled back, nothing saved."""
        message = describe(exc)
        request.app.state.write_probe.failed(message)
        return JSONResponse(
            {"detail": f"{message}; nothing was saved. Try again later or tell the server's admin."},
            status_code=503,
            headers={"Retry-After": "30"},
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {
                "detail": _validation_message(exc),
                "errors": jsonable_encoder([{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in exc.errors()]),
            },
            status_code=422,
        )

    app.include_router(router)
    app.include_router(verify_router)
    app.include_router(explore_router)
    app.include_router(suggest_router)
    mount_pages(app, config.web_dist)
    return app

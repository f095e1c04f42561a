"""The Comfy API v2 (Comfy-Org's contract for running workflows) on ComfyGate, beside its own API.

The official SDKs (Python ``comfy-sdk``, TypeScript ``@comfyorg/sdk``) drive ComfyGate unchanged:
``COMFY_BASE_URL=http://127.0.0.1:8000``. Jobs are ordinary tasks on the pool; assets are
content-addressed blobs under ``uploads/v2``. Every error under ``/api/v2/`` is the contract's envelope.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from api.v2 import assets, health, jobs
from api.v2.errors import EnvelopeMiddleware, V2Error, v2_error_handler
from api.v2.state import install as start
from api.v2.state import stop

router = APIRouter()
router.include_router(health.router)
router.include_router(jobs.router)
router.include_router(assets.router)


__all__ = ["install", "router", "start", "stop"]


def install(app: FastAPI) -> None:
    """Routes, the error handler and the envelope middleware (outermost, so it sees every answer)."""
    app.add_exception_handler(V2Error, v2_error_handler)
    app.include_router(router)
    app.add_middleware(EnvelopeMiddleware)

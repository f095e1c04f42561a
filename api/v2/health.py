"""``GET /api/v2/health``: is ComfyGate up, and can it run jobs now (open without a key, like /api/health)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from api.dependencies import get_services
from api.v2.models import Health
from gateway.services import Services

router = APIRouter(prefix="/api/v2", tags=["Comfy API v2"])


@router.get("/health", summary="Health: healthy when every backend can take jobs", responses={200: {"model": Health}})
async def health(services: Services = Depends(get_services)) -> JSONResponse:
    backends = list(services.manager.backends.values())
    up = sum(1 for b in backends if b.healthy)
    status = "healthy" if up == len(backends) else ("degraded" if up else "unhealthy")
    return JSONResponse(
        {
            "status": status,
            "backends": {"healthy": up, "total": len(backends)},
            "queue": {"pending": len(services.manager.pending)},
        }
    )

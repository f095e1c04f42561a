"""``GET /metrics``: Prometheus metrics of this app."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.dependencies import get_services
from gateway.services import Services

router = APIRouter(tags=["core"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(services: Services = Depends(get_services)) -> Response:
    return Response(services.extras["metrics"].render(), media_type=CONTENT_TYPE_LATEST)

"""Wire the protections into an app in the one order that works (see SECURITY.md).

Outermost first: CORS (so preflights and 401s carry CORS headers), then the Origin check (a page of
another site is refused with keys on or off), then API keys (so a caller without a key never makes us
buffer a body), then body limits, then the app.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from config import Settings
from security.auth import APIKeyMiddleware, install_log_redaction, install_openapi_security, viewcomfy_pair_problem
from security.limits import RequestLimitsMiddleware
from security.origin import OriginMiddleware

log = logging.getLogger("comfygate.security")

CORS_HEADERS = ["Authorization", "X-API-Key", "Content-Type", "client_id", "client_secret", "Last-Event-ID"]


def install_security(app: FastAPI, settings: Settings) -> None:
    # add_middleware puts each new one outside the previous ones: add innermost first.
    app.add_middleware(RequestLimitsMiddleware, settings=settings)
    app.add_middleware(APIKeyMiddleware, settings=settings)
    app.add_middleware(OriginMiddleware, allowed=settings.cors_origins)
    if settings.cors_origins:  # closed by default: no CORS headers at all
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=CORS_HEADERS,
            expose_headers=["Retry-After", "WWW-Authenticate", "Content-Disposition"],
            allow_credentials=False,  # keys travel in headers, never in cookies
            max_age=600,
        )
    problem = viewcomfy_pair_problem(settings)
    if problem:
        log.warning(problem)
    install_openapi_security(app, settings)
    install_log_redaction()

"""Signed, expiring links to output files: what a client fetches with a plain GET, without credentials.

ViewComfy's current clients download each output from its ``filepath`` with a bare GET (no headers, no
redirect followed), so with API keys on the link itself must carry the permission: an HMAC-SHA256 over
the task, the file name and the expiry time. The route that serves it is open in the API-key middleware
and checks the signature instead; a link cannot be widened to another file or extended in time.

The key: ``COMFYUI_LINK_SECRET`` when set (every replica behind one address signs alike), else derived
from the configured secrets (API keys, the ViewComfy server pair), else random per process (links then die
with a restart; nothing else to protect without any secret configured, yet links stay unguessable).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Iterable
from typing import Protocol
from urllib.parse import quote, urlencode

from config import Settings
from core.errors import ComfyGateError


class LinkRefused(ComfyGateError):
    """The signature does not match, or the link expired: a 403 that says which."""

    status_code = 403
    code = "link_refused"


class OutputLinks(Protocol):
    """Where an output can be fetched without credentials (a signed ComfyGate link, a presigned bucket URL)."""

    def link(self, base_url: str, task_id: str, filename: str) -> str: ...


def derive_key(explicit: str | None, secrets: Iterable[str | None]) -> bytes:
    """The signing key: the explicit secret, else a digest of every configured secret, else random."""
    if explicit:
        return hashlib.sha256(b"comfygate-links\0" + explicit.encode()).digest()
    material = [s.encode() for s in secrets if s]
    if material:
        return hashlib.sha256(b"comfygate-links\0" + b"\0".join(sorted(material))).digest()
    return os.urandom(32)


def links_from_settings(settings: Settings) -> SignedLinks:
    secrets = [k.get_secret_value() for k in settings.api_keys]
    for pair_part in (settings.viewcomfy_server_client_id, settings.viewcomfy_server_client_secret):
        if pair_part is not None:
            secrets.append(pair_part.get_secret_value())
    explicit = settings.link_secret.get_secret_value() if settings.link_secret is not None else None
    return SignedLinks(derive_key(explicit, secrets), settings.viewcomfy_link_ttl)


class SignedLinks:
    """``link()`` for the answer, ``verify()`` in the route that serves it (an :class:`OutputLinks`)."""

    def __init__(self, key: bytes, ttl: float, path: str = "/api/viewcomfy/files") -> None:
        self._key = key
        self.ttl = ttl
        self.path = path

    def _signature(self, task_id: str, filename: str, expires: int) -> str:
        message = f"{task_id}\0{filename}\0{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def link(self, base_url: str, task_id: str, filename: str, now: float | None = None) -> str:
        expires = int((now or time.time()) + self.ttl)
        query = urlencode({"expires": expires, "signature": self._signature(task_id, filename, expires)})
        return f"{base_url.rstrip('/')}{self.path}/{quote(task_id, safe='')}/{quote(filename, safe='')}?{query}"

    def verify(self, task_id: str, filename: str, expires: str, signature: str, now: float | None = None) -> None:
        try:
            when = int(expires)
        except ValueError:
            raise LinkRefused("expires must be a Unix time in seconds") from None
        expected = self._signature(task_id, filename, when)
        if not hmac.compare_digest(expected, signature):
            raise LinkRefused("the link's signature does not match this file")
        if when < (now or time.time()):
            raise LinkRefused("the link has expired; fetch the result again for a fresh one")

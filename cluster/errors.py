"""The error every cluster write answers while what it needs (Redis, the object store) is away."""

from __future__ import annotations

from core.errors import ServiceBusy


class ClusterUnavailable(ServiceBusy):
    code = "cluster_unavailable"

"""Cluster mode: several ComfyGate replicas as one service, through Redis and object storage (see coordinator)."""

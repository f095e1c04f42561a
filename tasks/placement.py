"""The seams cluster mode plugs into: where tasks go, and where their output files are kept.

Without them (the default) this process decides alone: ``Pool.pick`` chooses among its backends,
``Pool.pending`` holds what waits, outputs stay in ``outputs/``. With several replicas sharing the same
backends, a ``Placement`` makes those choices across replicas and an ``OutputKeeper`` copies outputs to
storage every replica reads.
"""

from __future__ import annotations

from typing import Protocol

from core.task import Task


class Placement(Protocol):
    async def place(self, task: Task) -> Task:
        """A new task: hand it to the backend chosen for it, or hold it; returns the task as accepted."""
        ...

    def requeue(self, task: Task) -> None:
        """An accepted task (already marked pending, without a backend) goes back to the shared queue."""
        ...

    def drives(self, task: Task) -> bool:
        """Whether this process drives ``task`` (its backend's events arrive here)."""
        ...

    async def interrupt(self, task: Task) -> None:
        """Have the process that drives ``task`` stop it."""
        ...


class OutputKeeper(Protocol):
    async def keep(self, task: Task) -> None:
        """Store the outputs of ``task`` where every replica serves them; returns once stored."""
        ...

    def keep_behind(self, task: Task) -> None:
        """The same for a completed ComfyUI run, in the background (its backend keeps a copy meanwhile)."""
        ...

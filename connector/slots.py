"""Stable worker ids for replicas that have none (``docker compose up --scale worker=N``).

A worker keeps its table store in ``<data dir>/<worker id>``; with the container's
random host name as its id, every recreated container would rebuild its table from the
changelog. Replicas sharing one state volume instead claim the first free slot,
``worker-0``, ``worker-1``, ..., by holding an exclusive ``flock`` on
``<data dir>/.slots/worker-<n>.lock`` for their whole life. The kernel releases the lock
when the process ends, however it ends, so a recreated container takes over a
predecessor's id and its RocksDB directory; two live workers never share one.

``python -m connector.slots connector worker`` claims a slot, then execs the command
with ``CONNECTOR_WORKER_ID`` set (the lock's descriptor is inherited across the exec).
A worker whose id is configured (``CONNECTOR_WORKER_ID``, as a Kubernetes StatefulSet's
pod name is) claims nothing.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
from pathlib import Path

from connector.settings import Settings, child_environment, get_settings

__all__ = ["MAX_SLOTS", "claim_slot", "main"]

logger = logging.getLogger(__name__)

MAX_SLOTS = 1024


def claim_slot(data_dir: str | Path, prefix: str = "worker") -> tuple[str, int]:
    """The first free ``<prefix>-<n>`` and the open descriptor whose lock holds it."""
    slots = Path(data_dir) / ".slots"
    slots.mkdir(parents=True, exist_ok=True)
    for n in range(MAX_SLOTS):
        fd = os.open(slots / f"{prefix}-{n}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return f"{prefix}-{n}", fd
    raise RuntimeError(f"all {MAX_SLOTS} worker slots in {slots} are taken")


def _worker_id(settings: Settings) -> tuple[str, int | None]:
    if "worker_id" in settings.model_fields_set:
        return settings.worker_id, None
    return claim_slot(settings.data_dir)


def main(argv: list[str] | None = None) -> None:
    command = list(sys.argv[1:] if argv is None else argv)
    if not command:
        raise SystemExit("usage: python -m connector.slots COMMAND [ARGS...]")
    worker_id, fd = _worker_id(get_settings())
    if fd is not None:
        os.set_inheritable(fd, True)  # the lock lives as long as the exec'd worker
    print(f"connector.slots: worker id {worker_id}", file=sys.stderr, flush=True)
    os.execvpe(command[0], command, child_environment({"CONNECTOR_WORKER_ID": worker_id}))


if __name__ == "__main__":
    main()

"""The files every server serves: made once, with real (random) bytes,
world-readable (nginx's worker runs as an unprivileged user), reused by
later runs while their sizes match."""

from __future__ import annotations

import os
import pathlib

from . import matrix

CHUNK = 4 << 20


def bulk_name(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"bulk-{size >> shift}{unit}.bin"
    return f"bulk-{size}B.bin"


def _make(path: pathlib.Path, size: int) -> None:
    if path.exists() and path.stat().st_size == size:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        left = size
        while left:
            n = min(left, CHUNK)
            f.write(os.urandom(n))
            left -= n
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def ensure(directory: pathlib.Path, bulk_bytes: int | None) -> dict[str, int]:
    """Makes the workload files (and the bulk file of ``bulk_bytes``) in
    ``directory``; returns {name: size}."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    files = {w.file: w.size for w in matrix.WORKLOADS if w.file}
    if bulk_bytes:
        files[bulk_name(bulk_bytes)] = bulk_bytes
    for name, size in files.items():
        _make(directory / name, size)
    return files

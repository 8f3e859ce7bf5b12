"""File helpers: atomic writes and incrementing run directories."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | Path, sync: bool = True):
    """Yield a temp file path next to ``path``; when the block succeeds the file gets the usual permissions
    and replaces ``path`` in one ``os.replace``. On any error the temp file is removed and ``path`` is left
    as it was. For writers that want a file name rather than a file object (exporters, savers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _default_file_mode())  # mkstemp makes 0600; give the file the usual permissions
        if sync:  # on disk before it takes the final name (a crash never shows a stub)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def is_partial(path: str | Path, name: str | None = None) -> bool:
    """True for a temp file that an interrupted :func:`atomic_path` write left behind
    (``.<name>.<random>.tmp``); with ``name``, only one left by a write of that file name."""
    p = Path(path)
    prefix = f".{name}." if name is not None else "."
    return p.name.startswith(prefix) and p.name.endswith(".tmp") and len(p.name) > len(prefix) + 4 and p.is_file()


def remove_partials(folder: str | Path, names=None, recursive: bool = False) -> int:
    """Remove the temp files that interrupted atomic writes left in ``folder`` (of the file ``names`` only,
    when given; in subfolders too with ``recursive``). For a tool that owns its output folder, at start:
    never while another process may be writing there. Returns how many were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    n = 0
    for p in folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"):
        if is_partial(p) if names is None else any(is_partial(p, nm) for nm in names):
            p.unlink(missing_ok=True)
            n += 1
    return n


def _atomic_write(path: str | Path, write) -> Path:
    """Write through ``write(fileobj)`` to a temp file next to ``path``, then replace ``path`` with it."""
    with atomic_path(path, sync=False) as tmp, open(tmp, "wb") as f:  # synced here, before the rename
        write(f)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomically write ``data`` to ``path`` (temp file + os.replace)."""
    return _atomic_write(path, lambda f: f.write(data))


def atomic_torch_save(obj, path: str | Path) -> Path:
    """Atomically ``torch.save`` ``obj`` to ``path`` (temp file + os.replace)."""
    import torch

    return _atomic_write(path, lambda f: torch.save(obj, f))


def increment_path(path: str | Path, exist_ok: bool = False, sep: str = "", mkdir: bool = False) -> Path:
    """Return ``path`` if it is free (or ``exist_ok``), else the first free ``path{sep}2``, ``path{sep}3``, ...

    For a file path the number goes before the suffix (``runs/x.txt`` -> ``runs/x2.txt``). With ``mkdir`` the
    resulting directory is created.
    """
    path = Path(path)
    if path.exists() and not exist_ok:
        stem, suffix = (path.with_suffix(""), path.suffix) if path.is_file() else (path, "")
        n = 2
        while True:
            candidate = Path(f"{stem}{sep}{n}{suffix}")
            if not candidate.exists():
                break
            n += 1
        path = candidate
    if mkdir:
        path.mkdir(parents=True, exist_ok=True)
    return path


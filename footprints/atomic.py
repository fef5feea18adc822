"""Atomic file-system outputs: the one helper every stage uses.

``atomic_path(final)`` yields a temporary sibling path that keeps ``final``'s suffix (so GDAL,
Keras and PIL pick the right driver from the name) and renames it onto ``final`` on success. It
works for files and for directories (create the directory yourself, or pass ``dir=True``).
Temporaries left by a killed run (``.<name>.tmp-*``) are removed first; on error the temporary is
removed and ``final`` is untouched. Luigi's ``LocalTarget.open('w')`` / ``temporary_path()``
remain the way tasks write their own single-file targets.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

TMP_MARK = ".tmp-"
# a temporary of another host is only taken for abandoned after this long (its process is invisible here)
FOREIGN_STALE_S = 24 * 3600


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


def _split(final: Path) -> tuple[str, str]:
    suffixes = "".join(final.suffixes)
    stem = final.name[: len(final.name) - len(suffixes)] if suffixes else final.name
    return stem, suffixes


def _host() -> str:
    return socket.gethostname().replace("-", "_").replace(".", "_") or "host"


def temp_sibling(final: Path) -> Path:
    """``<dir>/.<stem>.tmp-<host>-<pid>-<random><suffixes>``: hidden, unique, with ``final``'s
    suffixes, and naming the process that writes it (so a cleaner can tell abandoned from live)."""
    final = Path(final)
    stem, suffixes = _split(final)
    return final.parent / f".{stem}{TMP_MARK}{_host()}-{os.getpid()}-{uuid.uuid4().hex[:10]}{suffixes}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _abandoned(p: Path) -> bool:
    """A temporary whose writer is gone: a dead process of this host, or one of another host
    untouched for a day, or an old-style name without host and pid."""
    parts = p.name.split(TMP_MARK, 1)[1].split("-")
    if len(parts) >= 3 and parts[1].isdigit():
        if parts[0] == _host():
            return int(parts[1]) != os.getpid() and not _pid_alive(int(parts[1]))
        try:
            return time.time() - p.lstat().st_mtime > FOREIGN_STALE_S
        except FileNotFoundError:
            return False
    return True


def clean_stale(final: Path) -> None:
    """Remove temporaries of ``final`` left behind by a killed process (never a live writer's)."""
    final = Path(final)
    stem, _ = _split(final)
    if final.parent.is_dir():
        for stale in final.parent.glob(f".{stem}{TMP_MARK}*"):
            if _abandoned(stale):
                _remove(stale)


@contextmanager
def atomic_path(final, dir: bool = False):  # noqa: A002 - mirrors tempfile's naming
    """Yield a temporary path beside ``final``; on success it replaces ``final`` in one rename.

    ``dir=True`` creates the temporary directory first (for multi-file outputs: tile sets,
    model directories). An existing ``final`` directory is replaced as a whole.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final)
    tmp = temp_sibling(final)
    if dir:
        tmp.mkdir()
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink() and tmp.is_dir():
            # os.replace cannot replace a non-empty directory: move the old one aside first
            old = temp_sibling(final)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_json(path, obj, indent: int | None = 1) -> None:
    write_text(path, json.dumps(obj, indent=indent, default=str))

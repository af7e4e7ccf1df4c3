"""Atomic writes: a reader sees the old file (or no folder) or the whole new one, never half."""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs get the usual permissions
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # again: some writers (safetensors) make the file anew, 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale_temps(folder: str | os.PathLike, names: list[str] | None = None) -> int:
    """Remove the temporary files (atomic_path) and folders (atomic_dir) left in `folder` when a run was killed
    (`.NAME.<random>.tmp*`); call it only while holding the folder's run_lock, so that no live writer's file is
    taken. With `names`, only the temporaries of those files (a shard's own, beside other shards' live ones).
    Returns how many."""
    n = 0
    temps = [p for p in Path(folder).glob(".*.tmp*") if not p.is_symlink()]  # one listing of the folder
    if names is not None:  # usually no temporary at all: each is matched against the names, not each name globbed
        patterns = [f".{glob.escape(name)}.*.tmp*" for name in names]
        temps = [p for p in temps if any(fnmatch.fnmatchcase(p.name, pattern) for pattern in patterns)]
    for p in temps:
        with contextlib.suppress(FileNotFoundError):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
            n += 1
    return n


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `path` (which must not exist); on success it is renamed to `path`,
    on error removed with everything in it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700 folders
    try:
        yield tmp
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, name: str = ".lock") -> Iterator[Path]:
    """Hold `folder`/`name` (holding this host's name and this process's pid) while writing into `folder`; a second
    run into the same folder is refused with the holder's host and pid. A lock whose process is gone (killed) is
    broken and taken; one held on another host (a shared file system) is never broken, only named."""
    from birdsed.errors import BirdsedError, RunLocked

    path = Path(folder) / name
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            host, pid = _holder(path)
            if host != socket.gethostname() and pid:
                raise RunLocked(
                    f"{folder} is in use by another birdsed run (host {host}, pid {pid}, {path}); wait "
                    "for it, or delete that file if the run is gone"
                ) from None
            if pid and _alive(pid):
                raise RunLocked(
                    f"{folder} is in use by another birdsed run (pid {pid}, {path}); wait for it, or give another --out"
                ) from None
            path.unlink(missing_ok=True)  # its process is gone: a killed run
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{socket.gethostname()} {os.getpid()}")
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)
        return
    raise BirdsedError(f"{path}: could not take the lock")


def _holder(path: Path) -> tuple[str, int]:
    """(host, pid) of a lock file; an old lock of a pid alone is this host's; an unreadable one (0: take it)."""
    try:
        words = path.read_text().split()
        return (words[0], int(words[1])) if len(words) == 2 else (socket.gethostname(), int(words[0]) if words else 0)
    except (OSError, ValueError):
        return socket.gethostname(), 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""Atomic writes: a reader sees the old file (or no folder) or the whole new one, never half.

This module is the one place that makes temporaries and names them: `.NAME.birdsed-<8 hex>.tmp<NAME's suffix>`
(a file, atomic_path) and `.NAME.birdsed-<8 hex>.tmpdir` (a folder, atomic_dir). remove_stale_temps removes only
names that match those patterns exactly (TEMP_FILE, TEMP_DIR), of the right kind (a regular file, a real folder), and
only the temporaries of the files its caller writes in that folder (`owned`): a user's `.notes.tmp`, `.cache.tmp/` or
`.scores.parquet.tmp` is never birdsed's, nor is `.x.birdsed-12345678.tmp` in a folder where birdsed writes no `x`
(a name that only looks like birdsed's proves nothing), and none of them is ever touched.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)

MARKER = "birdsed"
TEMP_FILE = re.compile(rf"\.(?P<name>.+)\.{MARKER}-[0-9a-f]{{8}}\.tmp(?P<suffix>(\.[^.]*)?)")
TEMP_DIR = re.compile(rf"\.(?P<name>.+)\.{MARKER}-[0-9a-f]{{8}}\.tmpdir")
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # never a read's: the file being written is the one to name
FULL_BYTES = 64 * 1024  # under this free, a failed write (a library's own error, no errno) is a full disk


def hash_file(h: hashlib._Hash, path: str | os.PathLike) -> None:
    """Feed a file's bytes to the hash `h`, a MiB at a time."""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


def file_sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    hash_file(h, path)
    return h.hexdigest()


def temp_name(path: Path, folder: bool = False) -> Path:
    """A fresh temporary name beside `path`, of the one pattern remove_stale_temps recognises as birdsed's."""
    tail = "tmpdir" if folder else f"tmp{path.suffix}"
    return path.with_name(f".{path.name}.{MARKER}-{secrets.token_hex(4)}.{tail}")


def temp_of(p: Path) -> str | None:
    """The name of the file or folder that `p` is a birdsed temporary of, or None when `p` is not one (a user's
    file, whatever it is named, a symlink, a folder named like a file's temporary or the reverse)."""
    if p.is_symlink():
        return None
    m = TEMP_DIR.fullmatch(p.name)
    if m:
        return m["name"] if p.is_dir() else None
    m = TEMP_FILE.fullmatch(p.name)
    if m and m["suffix"] == Path(m["name"]).suffix and p.is_file():
        return m["name"]
    return None


def _write_failed(e: BaseException, path: Path, tmp: Path) -> OSError | None:
    """`e` (raised while writing `path` through `tmp`) as an OSError naming `path`, where it is a failed write: a
    full or read-only disk (whatever file the library named: the source of a copy, the temporary, "a file"), or a
    permission error on the temporary; pyarrow, libsndfile and torch name no file or the temporary. None for
    anything else (a bug, a bad value, a file read)."""
    if not isinstance(e, OSError | RuntimeError) or isinstance(e, FileNotFoundError):
        return None
    if isinstance(e, OSError) and e.errno in FULL_ERRNOS:
        return OSError(e.errno, os.strerror(e.errno), str(path))
    if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM) and e.filename in (None, str(tmp), str(path)):
        return OSError(e.errno, os.strerror(e.errno), str(path))
    if isinstance(e, OSError) and e.filename:
        return None  # it names its own file (a file read)
    with contextlib.suppress(OSError):
        if shutil.disk_usage(path.parent).free < FULL_BYTES:  # a library's own error (libsndfile) on a full disk
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return None


def undecodable_name(path: str | os.PathLike) -> str | None:
    """None for a path that is valid UTF-8 (every output can hold it); else the path as shown in errors.csv and
    messages: each byte that is not UTF-8 written as \\xNN (b"\\xff.wav" -> "\\xff.wav")."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (temp_name); on success it replaces `path`, on error it is removed.
    A full or read-only disk is an OSError naming `path` (not the temporary, not "a file")."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # the umask applies, as to any output
    except OSError as e:
        raise (_write_failed(e, path, tmp) or e) from e
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # some writers (safetensors) make the file anew, 0600
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        failed = _write_failed(e, path, tmp)
        if failed is not None:
            raise failed from e
        raise


def remove_stale_temps(folder: str | os.PathLike, owned: Iterable[str] | Callable[[str], bool]) -> int:
    """Remove the temporaries (temp_of: atomic_path's files, atomic_dir's folders) that a killed run left in
    `folder`, and nothing else; call it only while holding the folder's run_lock, so that no live writer's file is
    taken. `owned` says which files the caller writes in `folder` (their names, or a test of a name, such as a
    suffix): only their temporaries go, so a file merely named like one of birdsed's, of a name birdsed does not
    write there, stays. Returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    owns = owned if callable(owned) else set(owned).__contains__
    n = 0
    for p in folder.iterdir():  # one listing of the folder
        if not p.name.startswith(".") or f".{MARKER}-" not in p.name:
            continue
        name = temp_of(p)
        if name is None or not owns(name):
            continue
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
def atomic_dir(path: str | os.PathLike, into_existing: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `path` (temp_name); on success it is renamed to `path`, on error removed with
    everything in it. `path` must not exist, unless `into_existing`: then each entry of the temporary folder replaces
    the one of its name in `path` (whole), and the rest of `path` stays. A full or read-only disk is an OSError naming
    the file under `path` (never the temporary folder)."""
    path = Path(path)
    tmp = temp_name(path, folder=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir(0o777)  # the umask applies
    except OSError as e:
        raise (_write_failed(e, path, tmp) or e) from e
    try:
        yield tmp
        if into_existing and path.is_dir():
            _move_into(tmp, path)
        else:
            tmp.rename(path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        failed = _named_outside(e, tmp, path) or _write_failed(e, path, tmp)
        if failed is not None:
            raise failed from e
        raise


def _named_outside(e: BaseException, tmp: Path, path: Path) -> OSError | None:
    """An OSError naming a file inside the temporary folder `tmp`, naming it under `path` instead (None if not)."""
    if isinstance(e, OSError) and e.filename and str(e.filename).startswith(f"{tmp}{os.sep}"):
        inner = Path(e.filename).relative_to(tmp)
        if (m := TEMP_FILE.fullmatch(inner.name)) is not None:
            inner = inner.with_name(m["name"])  # a file's own temporary inside it: the file
        return OSError(e.errno, e.strerror, str(path / inner))
    return None


def _move_into(tmp: Path, path: Path) -> None:
    """Each entry of `tmp` replaces the one of its name in `path`; then `tmp` goes."""
    for entry in sorted(tmp.iterdir()):
        dest = path / entry.name
        if dest.is_dir() and not dest.is_symlink():
            old = temp_name(dest, folder=True)
            dest.rename(old)
            entry.rename(dest)
            shutil.rmtree(old)
        else:
            os.replace(entry, dest)
    tmp.rmdir()


LOCK_YOUNG_S = 60.0  # an empty or unreadable lock younger than this is being taken by a live run (an older birdsed)


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, name: str = ".lock") -> Iterator[Path]:
    """Hold `folder`/`name` (holding this host's name and this process's pid) while writing into `folder`; a second
    run into the same folder is refused with the holder's host and pid. A lock whose process is gone (killed) is
    broken and taken; one held on another host (a shared file system) is never broken, only named.

    The lock is never seen empty: its words are written to a temporary file that is then linked to the lock's name
    (link fails if the name exists, as O_EXCL does), so there is no moment between creating it and writing the pid
    that a second run could read as a dead run's lock. An empty or unreadable lock (a planted one, an older birdsed's
    half-taken one) is held while young (LOCK_YOUNG_S) and broken when older."""
    from birdsed.errors import BirdsedError

    path = Path(folder) / name
    for _ in range(3):
        if _link_lock(path):
            remove_stale_temps(folder, [name])  # a killed taker's words, left under their temporary name
            try:
                yield path
            finally:
                path.unlink(missing_ok=True)
            return
        _refuse_or_break(folder, path)
    raise BirdsedError(f"{path}: could not take the lock")


def _link_lock(path: Path) -> bool:
    """Create `path` whole, holding "HOST PID"; False when it exists."""
    return create_text_once(path, f"{socket.gethostname()} {os.getpid()}")


def create_text_once(path: str | os.PathLike, text: str) -> bool:
    """Create `path` whole, holding `text`, unless it exists (then False, and it is left as it is): two processes
    racing to create it agree on one whole file (a run's lock, a shared partition of shards)."""
    path = Path(path)
    attempts = 3
    for attempt in range(attempts):
        tmp = temp_name(path)  # the words first, under a temporary name (a kill here leaves it to remove_stale_temps)
        try:
            with open(tmp, "x") as f:
                f.write(text)
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except FileNotFoundError as e:
            # the temporary went before the link: a racing run that took the lock swept the takers' words (its
            # remove_stale_temps cannot tell a killed taker's from a live one's); a fresh one settles who holds it
            swept = path.parent.is_dir() and not tmp.exists()
            if not swept or attempt == attempts - 1:
                raise (_write_failed(e, path, tmp) or e) from e
        except OSError as e:
            raise (_write_failed(e, path, tmp) or e) from e
        finally:
            tmp.unlink(missing_ok=True)
    return False  # not reached: the last attempt returns or raises


def _refuse_or_break(folder: str | os.PathLike, path: Path) -> None:
    """Raise RunLocked when the lock at `path` is a live run's; remove it when its run is gone."""
    from birdsed.errors import RunLocked

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
    if not pid and _age_s(path) < LOCK_YOUNG_S:
        raise RunLocked(
            f"{folder} is being taken by another birdsed run ({path} is empty and new); wait for it, or delete "
            "that file if no run is going"
        ) from None
    path.unlink(missing_ok=True)  # its process is gone: a killed run


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return LOCK_YOUNG_S  # gone already: nothing to wait for


def _holder(path: Path) -> tuple[str, int]:
    """(host, pid) of a lock file; an old lock of a pid alone is this host's; an empty or unreadable one has pid 0."""
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

"""Job-array shards: `predict --shard I/N` runs the I-th of N parts of the inputs into one shared --out, side by side
with the other N - 1 (on one machine or many, over a shared file system); the last shard to finish, or
`birdsed merge OUT`, builds the combined outputs (outputs.py) from every shard's parts.

Shards are balanced by duration: the files, sorted, go largest first (file size stands for duration: reading every
header of a large archive costs more than the balance gains) to the shard with the least so far (LPT scheduling).
The first shard to start writes that partition of the input set into OUT; every later shard takes its files from it,
not from sizes it reads again (a file whose size changed between two shards' starts was in neither). An input that
appeared after the first shard started is not in the set (said); one that is gone is that shard's error; and the
merge makes every recording of the set that is in no shard's outputs an error (errors.csv, exit 1).

OUT/shards/partition-<N>.json  the input set and each shard's files, written once (by the first shard to start)
OUT/shards/<I>-of-<N>.json     written (atomically) when shard I finishes: its files, its errors, the output spec and
                               each file's part
"""

from __future__ import annotations

import heapq
import json
import os
from pathlib import Path

from birdsed.config import MAX_SHARDS
from birdsed.errors import BirdsedError, ConfigError
from birdsed.fsutil import create_text_once, write_text_atomic

SHARDS = "shards"


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N), 1 <= I <= N <= MAX_SHARDS (SLURM: --array=1-N and --shard $SLURM_ARRAY_TASK_ID/N)."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected I/N, e.g. 3/8") from None
    if not 1 <= i <= n:
        raise ConfigError(f"--shard {text!r}: I must be in 1..N")
    if n > MAX_SHARDS:
        raise ConfigError(f"--shard {text!r}: N must be <= {MAX_SHARDS}")
    return i, n


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def partition(files: list[str], n: int) -> list[list[str]]:
    """The files of each of n shards, each in sorted order (module docstring: LPT on file size, each size read once)."""
    sizes = {f: _size(f) for f in files}
    load = [(0, k) for k in range(n)]
    shards: list[list[str]] = [[] for _ in range(n)]
    for f in sorted(sorted(files), key=sizes.__getitem__, reverse=True):
        total, k = heapq.heappop(load)
        shards[k].append(f)
        heapq.heappush(load, (total + sizes[f], k))
    return [sorted(s) for s in shards]


def shard_files(files: list[str], i: int, n: int) -> list[str]:
    """The files of shard i of n (1-based), in sorted order."""
    return partition(files, n)[i - 1]


def partition_path(out: Path, n: int) -> Path:
    return out / SHARDS / f"partition-{n}.json"


def shared_partition(out: Path, names: list[str], n: int) -> list[list[str]]:
    """The partition of the input set among n shards: the one the first shard to start wrote into OUT, or this one's
    `names` partitioned and written there now (created once, atomically: two shards starting together agree)."""
    path = partition_path(out, n)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        create_text_once(path, json.dumps({"of": n, "shards": partition(names, n)}))  # or another shard was first
    try:
        shards = json.loads(path.read_text())["shards"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BirdsedError(f"{path}: unreadable partition of the shards ({e}); use a new --out") from e
    if not isinstance(shards, list) or len(shards) != n:
        raise BirdsedError(f"{path}: not a partition into {n} shards; use a new --out")
    return shards


def my_inputs(
    out: Path, files: list[str], errors: list[tuple[str, str]], i: int, n: int
) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """Shard i's (files, errors) from the shared partition, and the inputs listed now that are not in the input set
    (they appeared after the first shard started). A file of the set that is gone now is an error of its shard."""
    shards = shared_partition(out, [*files, *(e[0] for e in errors)], n)  # an input that can't run has its shard
    mine = shards[i - 1]
    listed = set(files) | {e[0] for e in errors}
    in_set = {f for s in shards for f in s}
    gone = [(f, "file not found (it was an input when the first shard started)") for f in mine if f not in listed]
    keep = set(mine)
    new = sorted(listed - in_set)
    return [f for f in files if f in keep], [e for e in errors if e[0] in keep] + gone, new


def record_path(out: Path, i: int, n: int) -> Path:
    return out / SHARDS / f"{i}-of-{n}.json"


def write_record(
    out: Path, i: int, n: int, files: list[str], errors: list[tuple[str, str]], spec: dict, parts: dict[str, str]
) -> None:
    """parts: each file's part name in OUT/parts (what it scored: parts.py)."""
    record = {"shard": i, "of": n, "files": files, "errors": [list(e) for e in errors], "spec": spec, "parts": parts}
    write_text_atomic(record_path(out, i, n), json.dumps(record))


def finished(out: Path) -> tuple[int, list[dict]]:
    """(N, the records of the shards of N that have finished); an OUT with shards of several N is an error."""
    paths = sorted((out / SHARDS).glob("*-of-*.json"))
    if not paths:
        raise BirdsedError(f"{out}: no finished shard (predict --shard I/N writes {out / SHARDS}/I-of-N.json)")
    ns = {int(p.stem.split("-of-")[1]) for p in paths}
    if len(ns) > 1:
        raise BirdsedError(f"{out}: shards of several counts ({sorted(ns)}); one --out takes one N")
    records = []
    for p in paths:
        try:
            records.append(json.loads(p.read_text()))
        except (ValueError, UnicodeDecodeError) as e:
            raise BirdsedError(f"{p}: unreadable shard record ({e}); run that shard again") from e
    return ns.pop(), records


def missing_shards(n: int, records: list[dict]) -> list[int]:
    return sorted(set(range(1, n + 1)) - {int(r["shard"]) for r in records})

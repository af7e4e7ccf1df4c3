"""`birdsed embed`: the embedding of every window of every recording into an embedding DB (db.py), streamed,
resumable and batch-safe as `predict` is.

Recordings are decoded chunk by chunk (infer/stream.py, several side by side), their windows batched across files
through the model's `window_embeddings` (model/detector.py). Each recording, once done, is one part
(DB/parts/<key>.<size>-<mtime_ns>.npz, named as predict's parts: infer/parts.py), so a killed run resumes at the
recordings it had not finished; then the parts are committed into new segments (db.py) with their index, and removed.
A recording already in a segment is skipped; one that changed since (size or modification time) is listed in
errors.csv (a DB never rewrites a committed segment: embed it into a new DB). Memory holds one batch of windows and
the windows of the recordings in flight, and one segment's index while it is built: never the archive.

With `--shard I/N` each of N processes embeds its share of the inputs (infer/shard.py's partition) into the same DB
side by side; each commits what is done when it finishes (under the DB's lock), so the DB is whole once all have.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from birdsed.errors import BirdsedError, RunLocked
from birdsed.fsutil import atomic_dir, atomic_path, remove_stale_temps, run_lock
from birdsed.infer.parts import part_paths
from birdsed.infer.shard import my_inputs, parse_shard
from birdsed.search.db import (
    DB_JSON,
    INDEX,
    PARTS,
    RECORDINGS,
    SEGMENT_JSON,
    SEGMENT_WINDOWS,
    SEGMENTS,
    VECTORS,
    WINDOWS,
    DBInfo,
    Segment,
    check_info,
    segment_paths,
)
from birdsed.search.index import build_index

log = logging.getLogger(__name__)

PART_SUFFIX = ".npz"
CHANGED = (
    "changed since it was embedded (size or modification time): not embedded again (a DB never rewrites what it "
    "holds); embed it into a new DB"
)
COMMIT_WAIT_S = 600.0  # how long a run waits for another to finish committing


@dataclass
class FileEmbeddings:
    """One recording's windows: their start times (s) and embeddings [shape=(n, D)]."""

    path: str
    duration_s: float
    start_s: np.ndarray
    embeddings: np.ndarray


@dataclass
class EmbedSummary:
    n_files: int
    n_done_before: int
    n_windows_added: int
    audio_s: float
    wall_s: float
    errors: list[tuple[str, str]] = field(default_factory=list)
    out: Path | None = None
    errors_csv: Path | None = None  # where the errors are listed

    @property
    def realtime_factor(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else float("inf")


def embed_files(
    model,
    files: list[str],
    window_s: float,
    hop_s: float,
    batch_size: int = 64,
    workers: int | None = None,
    device: str = "auto",
    quiet: bool = False,
    short_policy: str | None = None,
    precision: str = "auto",
) -> Iterator[FileEmbeddings | tuple[str, str]]:
    """A FileEmbeddings per recording (in completion order), or (path, error) for one that fails to decode. The
    stream and batching are predict's (infer/loop.py), the model call its `window_embeddings`."""
    import torch
    from torch.utils.data import DataLoader

    from birdsed.infer.loop import default_workers, ready
    from birdsed.infer.stream import WindowStream
    from birdsed.model.detector import window_embeddings
    from birdsed.progress import progress_bar

    if not files:
        return
    model, dev, bf16 = ready(model, device, precision)
    workers = min(default_workers(dev) if workers is None else workers, len(files))
    sr = model.sample_rate_hz
    ds = WindowStream(
        files, window_s, hop_s, batch_size, sr, decode_threads=(os.cpu_count() or 1) if not workers else 1
    )
    dl = DataLoader(
        ds, batch_size=None, num_workers=workers, collate_fn=lambda b: b, prefetch_factor=4 if workers else None
    )
    pending: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    hop_exact_s = ds.hop / sr
    audio_s, t0 = 0.0, time.perf_counter()
    rate = lambda: f"{audio_s / max(time.perf_counter() - t0, 1e-9):.0f}x real time"  # noqa: E731
    with progress_bar(len(files), "embed", disable=quiet, extra=rate) as advance, torch.inference_mode():
        for batch in dl:
            audio, pieces = batch["audio"].to(dev), batch["pieces"]
            if pieces:
                with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16):
                    emb = window_embeddings(model, audio, pieces, ds.window, ds.hop, short_policy)
                emb = emb.float().cpu().numpy()
                assert emb.shape[0] == sum(p.n_windows for p in pieces), emb.shape  # (W, D)
                at = 0
                for p in pieces:
                    starts = np.arange(p.first_window, p.first_window + p.n_windows) * hop_exact_s
                    pending.setdefault(p.file, []).append((starts, emb[at : at + p.n_windows]))
                    at += p.n_windows
            for d in batch["done"]:
                got = pending.pop(d.index, [])
                advance(1)
                if d.error:
                    yield files[d.index], d.error
                    continue
                duration_s = d.n_samples / sr
                audio_s += duration_s
                starts = np.concatenate([g[0] for g in got]) if got else np.zeros(0)
                vecs = np.concatenate([g[1] for g in got]) if got else np.zeros((0, 0), np.float32)
                yield FileEmbeddings(files[d.index], duration_s, starts, vecs)


def check_embedding(
    model, window_s: float, hop_s: float, device: str = "auto", precision: str = "auto", short_policy: str | None = None
) -> None:
    """Refuse now what embed_files (the same keywords) would refuse at its first batch, by embedding one window of
    silence as it embeds a recording's: a device this machine has not, a runtime the model cannot build, a window the
    model does not take (BirdNET's 3 s). run_embed checks before it writes anything into the DB."""
    import torch

    from birdsed.infer.loop import ready, silent_window
    from birdsed.model.detector import window_embeddings

    model, dev, bf16 = ready(model, device, precision)
    audio, pieces, window, hop = silent_window(model.sample_rate_hz, window_s, hop_s, dev)
    with torch.inference_mode(), torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16):
        window_embeddings(model, audio, pieces, window, hop, short_policy)


def write_part(res: FileEmbeddings, path: Path) -> None:
    """One recording's windows as a part (atomically): emb (n, D) f16, start_s (n,), and the recording's name and
    stamp (what the part embedded: infer/parts.py)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            emb=res.embeddings.astype(np.float16),
            start_s=res.start_s.astype(np.float64),
            recording=np.array(res.path),
            stamp=np.array(stamp_of(path)),
        )


def stamp_of(part: Path) -> str:
    """The recording's "<size>-<mtime_ns>" a part's name holds (<key>.<stamp>.npz)."""
    return part.name.rsplit(".", 2)[1]


@dataclass
class Part:
    """A part as read: the recording, its stamp, window starts (n,) and embeddings (n, D) f16."""

    path: Path
    file: str
    stamp: str
    start_s: np.ndarray
    emb: np.ndarray


def read_part(path: Path) -> Part:
    """A part; a BirdsedError naming a damaged one."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return Part(path, str(z["recording"]), str(z["stamp"]), z["start_s"], z["emb"])
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise BirdsedError(f"{path}: a damaged part ({type(e).__name__}); delete it and run embed again") from e


def committed_stamps(db: Path) -> dict[str, str]:
    """{file: stamp} of every recording in the DB's segments."""
    out: dict[str, str] = {}
    for seg in segment_paths(db):
        t = pq.read_table(seg / RECORDINGS, columns=["file", "stamp"]).to_pydict()
        out.update(zip(t["file"], t["stamp"]))
    return out


def commit_parts(db: Path, info: DBInfo) -> int:
    """Move every part of DB/parts into new segments (at most SEGMENT_WINDOWS windows each), index them, remove the
    parts; returns the windows added. Call it holding the DB's lock."""
    remove_stale_temps(db / SEGMENTS, lambda name: name.isdigit())  # a killed commit's half-written segment
    parts_dir = db / PARTS
    if not parts_dir.is_dir():
        return 0
    done = committed_stamps(db)
    added = 0
    group: list[Part] = []
    held = 0
    for p in sorted(parts_dir.glob(f"*{PART_SUFFIX}")):
        if p.name.startswith("."):  # a temporary (fsutil)
            continue
        part = read_part(p)
        if done.get(part.file) == part.stamp:  # committed by a run killed before it removed the part
            p.unlink(missing_ok=True)
            continue
        if group and held + len(part.start_s) > SEGMENT_WINDOWS:
            added += _write_segment(db, info, group)
            group, held = [], 0
        part.emb = np.empty((0, 0), np.float16)  # read again when written: a group holds names, not vectors
        group.append(part)
        held += len(part.start_s)
    if group:
        added += _write_segment(db, info, group)
    return added


WINDOWS_SCHEMA = pa.schema(
    [("id", pa.int64()), ("file", pa.string()), ("start_s", pa.float64()), ("end_s", pa.float64())]
)


def _write_segment(db: Path, info: DBInfo, group: list[Part]) -> int:
    """One new segment of the parts of `group`, written whole (a temporary folder renamed), its index built; the
    parts are removed once it is in place. Returns its windows."""
    existing = segment_paths(db)
    first_id = sum(Segment.read(p).n for p in existing)
    name = f"{(int(existing[-1].name) + 1) if existing else 0:06d}"
    n_total = sum(len(g.start_s) for g in group)
    with atomic_dir(db / SEGMENTS / name) as tmp:
        at = first_id
        records = []
        with open(tmp / VECTORS, "wb") as vec, pq.ParquetWriter(tmp / WINDOWS, WINDOWS_SCHEMA) as windows:
            for g in group:
                part = read_part(g.path)
                n = len(part.start_s)
                if n and part.emb.shape != (n, info.dim):
                    raise BirdsedError(f"{g.path}: windows of shape {part.emb.shape}; the DB holds {info.dim}-d")
                vec.write(np.ascontiguousarray(part.emb, np.float16).tobytes())
                windows.write_table(
                    pa.table(
                        {
                            "id": np.arange(at, at + n, dtype=np.int64),
                            "file": [part.file] * n,
                            "start_s": part.start_s,
                            "end_s": part.start_s + info.window_s,
                        },
                        schema=WINDOWS_SCHEMA,
                    )
                )
                records.append((part.file, part.stamp, at, n))
                at += n
        pd.DataFrame(records, columns=["file", "stamp", "first_id", "n_windows"]).to_parquet(
            tmp / RECORDINGS, index=False
        )
        record = {"first_id": first_id, "n": n_total, "dim": info.dim, "n_recordings": len(group)}
        (tmp / SEGMENT_JSON).write_text(json.dumps(record))
        build_index(tmp / INDEX, info.dim, Segment.read(tmp).blocks())
    for g in group:
        g.path.unlink(missing_ok=True)
    log.info("%s: segment %s, %d windows of %d recordings", db, name, n_total, len(group))
    return n_total


def embed_part_paths(parts: Path, files: list[str]) -> dict[str, Path]:
    """Each recording's part as it is now (infer/parts.py's names, .npz)."""
    return {f: p.with_suffix(PART_SUFFIX) for f, p in part_paths(parts, files).items()}


def db_info(model_dir: Path, model, meta: dict, window_s: float, hop_s: float) -> DBInfo:
    """What this model's embeddings are (db.json); a ModelError for a kind of model that gives none."""
    from birdsed.errors import ModelError
    from birdsed.model.detector import can_embed
    from birdsed.model.kinds import kind_of
    from birdsed.model.meta import model_digest

    kind = kind_of(meta)
    if not can_embed(model):
        raise ModelError(
            f"{model_dir}: a {kind} model gives no window embedding (BirdNET, a head on BirdNET embeddings and the SED "
            "networks do): embed with one of those"
        )
    digest = model_digest(model_dir)
    space = getattr(model, "embedding_space", None) or f"{kind} model {digest[:16]}"
    return DBInfo(
        str(model_dir.resolve()),
        digest,
        kind,
        space,
        int(model.embedding_dim),
        float(window_s),
        float(hop_s),
        int(model.sample_rate_hz),
    )


def run_embed(
    model_dir: str | Path,
    inputs: list[str],
    out: str | Path,
    window_s: float | None = None,
    hop_s: float | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    device: str = "auto",
    quiet: bool = False,
    short_policy: str | None = None,
    shard: str | None = None,
    precision: str = "auto",
    cluster: str | None = None,
) -> EmbedSummary:
    """Embed every window of the inputs' recordings into the DB `out` (module docstring); window_s and hop_s default
    the model's. A DB of another model's embeddings is refused (db.check_info). cluster: embed on a dask cluster
    (search/cluster.py; the model is loaded here too, for what the DB records of it)."""
    from birdsed.infer.predict import resolve_inputs
    from birdsed.model.modeldir import load_model_dir

    model_dir, out = Path(model_dir), Path(out)
    model, _, meta = load_model_dir(model_dir)
    window_s = model.window_s if window_s is None else window_s
    hop_s = model.hop_s if hop_s is None else hop_s
    info = db_info(model_dir, model, meta, window_s, hop_s)
    files, errors = resolve_inputs(inputs, None)
    if not files and not errors:
        raise BirdsedError("no audio files to embed (give files or folders)")
    i, n = parse_shard(shard) if shard else (0, 0)
    # before the DB is touched; a cluster's device is its workers' (they say what they lack), the window is checked here
    check_embedding(model, window_s, hop_s, "cpu" if cluster else device, precision, short_policy)
    out.mkdir(parents=True, exist_ok=True)
    with waited_lock(out):
        check_info(out, info)  # before anything is embedded: a DB of other embeddings is refused now
        done = committed_stamps(out)
    if shard:
        files, errors, new = my_inputs(out, files, errors, i, n)
        if new:
            log.warning("%d input(s) appeared after the first shard started: not embedded: %s", len(new), new[:3])
    parts = out / PARTS
    part_of = embed_part_paths(parts, files)  # named by each recording as it is now, before anything reads it
    changed = [f for f in files if f in done and done[f] != stamp_of(part_of[f])]
    errors += [(f, CHANGED) for f in changed]
    todo = [f for f in files if f not in done and not part_of[f].is_file()]
    n_before = len(files) - len(todo) - len(changed)
    options = {
        "window_s": window_s,
        "hop_s": hop_s,
        "batch_size": batch_size,
        "device": device,
        "short_policy": short_policy,
        "precision": precision,
    }
    t0 = time.perf_counter()
    audio_s = 0.0
    with run_lock(out, f".lock-shard{i}of{n}" if shard else ".lock-embed"):
        parts.mkdir(exist_ok=True)
        remove_stale_temps(parts, [p.name for p in part_of.values()])
        _remove_superseded(parts, part_of)
        if cluster:
            audio_s, failed = _embed_on_cluster(cluster, model_dir, todo, part_of, parts, quiet, options)
            errors += failed
        else:
            for res in embed_files(model, todo, quiet=quiet, workers=workers, **options):
                if isinstance(res, FileEmbeddings):
                    write_part(res, part_of[res.path])
                    audio_s += res.duration_s
                else:
                    errors.append(res)
    with waited_lock(out):
        added = commit_parts(out, info)
    wall_s = time.perf_counter() - t0
    from birdsed.infer.writers import write_errors

    report = write_errors(errors, out / (f"errors-shard{i}of{n}.csv" if shard else "errors.csv"))
    return EmbedSummary(len(files), n_before, added, audio_s, wall_s, errors, out, report)


def _embed_on_cluster(
    cluster: str, model_dir: Path, todo: list[str], part_of: dict[str, Path], parts: Path, quiet: bool, options: dict
) -> tuple[float, list[tuple[str, str]]]:
    if not todo:
        return 0.0, []
    from birdsed.search.cluster import embed_on_cluster

    got = embed_on_cluster(cluster, model_dir, todo, part_of, options, quiet)
    remove_stale_temps(parts, [part_of[f].name for f in todo])  # a worker killed mid-write left it
    return got


def _remove_superseded(parts: Path, part_of: dict[str, Path]) -> None:
    """Parts of an earlier version of a recording (another size or mtime) are removed: it is embedded afresh."""
    for f, path in part_of.items():
        key = path.name.rsplit(".", 2)[0]
        for old in parts.glob(f"{key}.*{PART_SUFFIX}"):
            if old.name != path.name and old.name.rsplit(".", 2)[0] == key:
                old.unlink(missing_ok=True)


@contextlib.contextmanager
def waited_lock(db: Path, wait_s: float = COMMIT_WAIT_S) -> Iterator[Path]:
    """The DB's lock (fsutil.run_lock), waited for while another run holds it (shards finishing together commit one
    after the other); RunLocked after wait_s."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            lock = run_lock(db, ".lock")
            path = lock.__enter__()
        except RunLocked:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
            continue
        try:
            yield path
        finally:
            lock.__exit__(None, None, None)
        return


def open_db_model(db: str | Path) -> Path:
    """The model folder a DB was embedded with (db.json)."""
    return Path(DBInfo.read(Path(db) / DB_JSON).model)

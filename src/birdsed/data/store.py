"""The prepared store: every recording decoded once to mono 32 kHz int16, memory-mapped.

Layout of a store folder:
  store.json            format version, sample rate, where the data came from
  manifest.parquet      the Manifest of the recordings that were prepared
  index.parquet         recording_id, key, n_samples, duration_s, orig_rate_hz, orig_channels
  report.csv            recording_id,path,reason for every recording skipped
  species.csv           the data set's species.csv, where it has one (so a model trained on the store keeps the names)
  audio/<key>.i16       raw little-endian int16 samples (written to a temp name, then renamed)
  audio/<key>.json      the recording's entry, written last: an entry exists only when its audio is whole

A crop is a slice of a memory map: reading it costs time proportional to its length.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from birdsed import SAMPLE_RATE_HZ
from birdsed.audio.decode import audio_info, stream_audio
from birdsed.data.manifest import OUTSIDE, SPECIES_FILE, Manifest
from birdsed.errors import AudioDecodeError, StoreError
from birdsed.fsutil import atomic_path, remove_stale_temps, run_lock, write_text_atomic
from birdsed.progress import audio_pace, progress_bar
from birdsed.rows import class_name_problem

STORE_VERSION = 1
STORE_FILES = ("store.json", "index.parquet", "manifest.parquet", "report.csv", SPECIES_FILE)  # in the store's folder
_INT16_SCALE = 32767.0


def recording_key(recording_id: str) -> str:
    """A file-name-safe, collision-free key for a recording id."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", recording_id)[-80:]
    return f"{safe}-{hashlib.sha1(recording_id.encode()).hexdigest()[:10]}"


def is_store(path: str | os.PathLike) -> bool:
    return (Path(path) / "store.json").is_file()


@dataclass
class PrepareResult:
    n_prepared: int
    n_resumed: int
    n_skipped: int
    audio_s: float
    wall_s: float

    def summary(self) -> str:
        return (
            f"prepared {self.n_prepared} recording(s), {self.n_resumed} already done, "
            f"{self.n_skipped} skipped; {audio_pace(self.audio_s, self.wall_s)}"
        )


def _source_stamp(path: str) -> dict:
    st = os.stat(path)
    return {"source_size": st.st_size, "source_mtime_ns": st.st_mtime_ns}


def _entry_is_current(json_path: Path, source: str) -> bool:
    """Whether a recording's samples are in the store whole, from its source as it is now (a truncated or
    replaced .i16 is decoded again)."""
    try:
        entry = json.loads(json_path.read_text())
        stamp = _source_stamp(source)
        whole = _i16_is_whole(json_path.with_suffix(".i16"), entry.get("n_samples"))
        return whole and all(entry.get(k) == v for k, v in stamp.items())
    except (OSError, ValueError, AttributeError):
        return False


def _i16_is_whole(path: Path, n_samples: object) -> bool:
    """Whether `path` is a regular file holding exactly `n_samples` int16 samples."""
    try:
        return path.is_file() and path.stat().st_size == 2 * int(n_samples)
    except (OSError, TypeError, ValueError):
        return False


def _prepare_one(recording_id: str, source: str, audio_dir: str) -> tuple[str, dict | None, str | None]:
    """Decode one recording into the store. Returns (id, entry, None) or (id, None, reason)."""
    key = recording_key(recording_id)
    raw_path = Path(audio_dir) / f"{key}.i16"
    try:
        info = audio_info(source)
        n_samples = 0
        with atomic_path(raw_path) as tmp, open(tmp, "wb") as f:
            for chunk in stream_audio(source):
                f.write((np.clip(chunk, -1.0, 1.0) * _INT16_SCALE).round().astype("<i2").tobytes())
                n_samples += len(chunk)
    except AudioDecodeError as e:
        return recording_id, None, str(e)
    entry = {
        "recording_id": recording_id,
        "key": key,
        "n_samples": n_samples,
        "duration_s": n_samples / SAMPLE_RATE_HZ,
        "orig_rate_hz": info.sample_rate_hz,
        "orig_channels": info.channels,
        **_source_stamp(source),
    }
    write_text_atomic(raw_path.with_suffix(".json"), json.dumps(entry))
    return recording_id, entry, None


def prepare(
    manifest: Manifest, out: str | os.PathLike, workers: int | None = None, quiet: bool = False
) -> PrepareResult:
    """Decode every recording of `manifest` into the store at `out`, resuming where a run stopped."""
    out = Path(out)
    audio_dir = out / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(out):  # one prepare at a time into a store; then what a killed run left half-written goes
        remove_stale_temps(out, STORE_FILES)
        remove_stale_temps(audio_dir, lambda name: Path(name).suffix in (".i16", ".json"))  # each recording's pair
        return _prepare_locked(manifest, out, audio_dir, workers, quiet)


def _prepare_locked(manifest: Manifest, out: Path, audio_dir: Path, workers: int | None, quiet: bool) -> PrepareResult:
    write_text_atomic(
        out / "store.json",
        json.dumps(
            {
                "version": STORE_VERSION,
                "sample_rate_hz": SAMPLE_RATE_HZ,
                "source": str(manifest.root),
                "format": manifest.source,
            }
        ),
    )
    t0 = time.perf_counter()
    table = manifest.table
    entries: dict[str, dict] = {}
    todo: list[tuple[str, str]] = []
    for rid, src in zip(table["recording_id"], table["path"]):
        json_path = audio_dir / f"{recording_key(rid)}.json"
        if _entry_is_current(json_path, src):
            entries[rid] = json.loads(json_path.read_text())
        else:
            todo.append((rid, src))
    n_resumed = len(entries)
    failures: list[tuple[str, str]] = [(rid, "audio file not found") for rid in manifest.missing]
    failures += [(rid, OUTSIDE) for rid in manifest.outside]
    failures += manifest.bad_names
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    new_audio_s = 0.0
    with progress_bar(total=len(todo), description="prepare", disable=quiet) as advance:
        if workers == 1:
            results = (_prepare_one(rid, src, str(audio_dir)) for rid, src in todo)
            for rid, entry, err in results:
                new_audio_s += _collect(rid, entry, err, entries, failures)
                advance(1)
        else:
            pool, futures = ProcessPoolExecutor(max_workers=workers), []
            try:
                futures = [pool.submit(_prepare_one, rid, src, str(audio_dir)) for rid, src in todo]
                for fut in as_completed(futures):
                    new_audio_s += _collect(*fut.result(), entries, failures)
                    advance(1)
            except BaseException:  # Ctrl-C: not every recording queued first (the pool's `with` waited for them)
                for fut in futures:  # here, not by shutdown(cancel_futures=True): its manager thread cancels only
                    fut.cancel()  # while the pool object lives, and the stop may drop it first
                pool.shutdown(wait=False)
                raise
            pool.shutdown()
    _write_tables(out, manifest, entries, failures)
    return PrepareResult(len(entries) - n_resumed, n_resumed, len(failures), new_audio_s, time.perf_counter() - t0)


def _collect(rid: str, entry: dict | None, err: str | None, entries: dict, failures: list) -> float:
    if entry is None:
        failures.append((rid, err or "unknown error"))
        return 0.0
    entries[rid] = entry
    return entry["duration_s"]


def _write_tables(out: Path, manifest: Manifest, entries: dict[str, dict], failures: list[tuple[str, str]]) -> None:
    table = manifest.table
    ok = table["recording_id"].isin(entries.keys()).to_numpy()
    prepared = table[ok].reset_index(drop=True).copy()
    prepared["duration_s"] = [entries[r]["duration_s"] for r in prepared["recording_id"]]
    index = pd.DataFrame(
        [entries[r] for r in prepared["recording_id"]],
        columns=["recording_id", "key", "n_samples", "duration_s", "orig_rate_hz", "orig_channels"],
    )
    paths = dict(zip(table["recording_id"], table["path"]))
    report = pd.DataFrame(
        [(r, paths.get(r, ""), why) for r, why in failures], columns=["recording_id", "path", "reason"]
    )
    for name, df in (("manifest.parquet", prepared), ("index.parquet", index)):
        with atomic_path(out / name) as tmp:
            df.to_parquet(tmp, index=False)
    with atomic_path(out / "report.csv") as tmp:
        report.to_csv(tmp, index=False)
    species = manifest.root / SPECIES_FILE  # the classes' names: a model trained on the store keeps them too
    if species.is_file():
        with atomic_path(out / SPECIES_FILE) as tmp:
            shutil.copyfile(species, tmp)
    else:
        (out / SPECIES_FILE).unlink(missing_ok=True)


_KEY = re.compile(r"[A-Za-z0-9._-]+")  # recording_key's characters: a key never leaves the audio folder
INDEX_COLUMNS = ("recording_id", "key", "n_samples", "duration_s")
MANIFEST_COLUMNS = ("recording_id", "path", "primary_labels", "secondary_labels")


def _store_meta(root: Path) -> dict:
    """store.json, checked: a JSON object of this format's version, sample rate (an int), source and format."""
    path = root / "store.json"
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise StoreError(f"{path}: not valid JSON ({str(e)[:200]}); prepare the store again") from None
    if not isinstance(meta, dict):
        raise StoreError(f"{path}: not a JSON object; prepare the store again")
    if meta.get("version") != STORE_VERSION:
        raise StoreError(f"{root}: store version {meta.get('version')!r} is not {STORE_VERSION}; prepare it again")
    rate = meta.get("sample_rate_hz")
    if rate != SAMPLE_RATE_HZ or isinstance(rate, bool):
        raise StoreError(f"{path}: sample_rate_hz {rate!r}; a store holds audio at {SAMPLE_RATE_HZ} Hz")
    for key in ("source", "format"):
        if not isinstance(meta.get(key), str):
            raise StoreError(f"{path}: {key!r} missing or not text ({meta.get(key)!r:.80}); prepare the store again")
    return meta


def _table(root: Path, name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """A store's parquet table, readable and with its columns (a StoreError naming the file otherwise)."""
    path = root / name
    if not path.is_file():
        raise StoreError(f"{root}: store is incomplete (no {name}); run `birdsed prepare` again to finish it")
    try:
        table = pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise StoreError(f"{path}: not a readable table ({type(e).__name__}); prepare the store again") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise StoreError(f"{path}: missing column(s) {missing}; prepare the store again")
    return table


def _checked_index(root: Path) -> pd.DataFrame:
    index = _table(root, "index.parquet", INDEX_COLUMNS)
    try:
        n = pd.to_numeric(index["n_samples"], errors="raise")
        d = pd.to_numeric(index["duration_s"], errors="raise")
        ok = bool(((n >= 0) & np.isfinite(d) & (d >= 0)).all()) and index["recording_id"].map(type).eq(str).all()
        ok = ok and index["key"].map(lambda k: isinstance(k, str) and _KEY.fullmatch(k) is not None).all()
    except (ValueError, TypeError):
        ok = False
    if not ok or index["recording_id"].duplicated().any():
        raise StoreError(
            f"{root / 'index.parquet'}: damaged ids, keys, sample counts or durations; prepare the store again"
        )
    return index


def _check_audio(root: Path, index: pd.DataFrame) -> None:
    """Every recording's samples there whole (a stat each), or a StoreError naming the first broken ones."""
    broken = [
        root / "audio" / f"{key}.i16"
        for key, n in zip(index["key"], index["n_samples"], strict=True)
        if not _i16_is_whole(root / "audio" / f"{key}.i16", n)
    ]
    if broken:
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        raise StoreError(
            f"{broken[0]}{more}: missing or of the wrong size; run `birdsed prepare` into the store again "
            "(it decodes them afresh)"
        )


def check_store(root: str | os.PathLike) -> Manifest:
    """Open a prepared store and read its manifest, every file checked (a StoreError naming the file and what is
    wrong, every recording's samples there whole): what `train` calls before it creates anything."""
    store = AudioStore(root)
    manifest = store.manifest()
    _check_audio(store.root, store.index)
    return manifest


class AudioStore:
    """Read-only access to a prepared store: crops by (recording, start_s, duration_s)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not is_store(self.root):
            raise StoreError(f"{self.root}: not a prepared store (no store.json); run `birdsed prepare` first")
        self.meta = _store_meta(self.root)
        self.sample_rate_hz = SAMPLE_RATE_HZ
        self.index = _checked_index(self.root).set_index("recording_id", drop=False)
        self._maps: dict[str, np.memmap] = {}

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, recording_id: str) -> bool:
        return recording_id in self.index.index

    def manifest(self) -> Manifest:
        """The recordings prepared, with their labels (checked: lists of names, none of them reserved)."""
        path = self.root / "manifest.parquet"
        table = _table(self.root, "manifest.parquet", MANIFEST_COLUMNS)
        try:
            for col in ("primary_labels", "secondary_labels"):
                table[col] = [[str(x) for x in labels] for labels in table[col]]
        except TypeError:
            raise StoreError(f"{path}: labels are not lists of names; prepare the store again") from None
        manifest = Manifest(table, Path(self.meta["source"]), self.meta["format"])
        problem = class_name_problem(manifest.classes)
        if problem:
            raise StoreError(f"{path}: {problem}")
        return manifest

    def report(self) -> pd.DataFrame:
        return pd.read_csv(self.root / "report.csv", dtype=str, keep_default_na=False)

    def duration_s(self, recording_id: str) -> float:
        return float(self._row(recording_id)["duration_s"])

    def _row(self, recording_id: str) -> pd.Series:
        try:
            return self.index.loc[recording_id]
        except KeyError:
            raise StoreError(f"{self.root}: no recording {recording_id!r} in the store") from None

    def _map(self, recording_id: str) -> np.memmap:
        m = self._maps.get(recording_id)
        if m is None:
            row = self._row(recording_id)
            path = self.root / "audio" / f"{row['key']}.i16"
            if not path.is_file() or path.stat().st_size != 2 * int(row["n_samples"]):
                raise StoreError(f"{path}: audio of {recording_id!r} is missing or has the wrong size; prepare again")
            m = np.memmap(path, dtype="<i2", mode="r")
            self._maps[recording_id] = m
        return m

    def read(self, recording_id: str, start_s: float = 0.0, duration_s: float | None = None) -> np.ndarray:
        """Samples [start_s, start_s + duration_s) as float32 (shorter at the end of the recording)."""
        m = self._map(recording_id)
        start = max(0, int(round(start_s * self.sample_rate_hz)))
        stop = len(m) if duration_s is None else min(len(m), start + int(round(duration_s * self.sample_rate_hz)))
        return m[start:stop].astype(np.float32) / _INT16_SCALE

"""The combined outputs of a predict folder's parts, once every shard has finished (`birdsed merge OUT`, or the
last shard to finish). Reads model.json's thresholds without torch: a merge costs the parts it streams, not a
model's stack."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from birdsed.errors import BirdsedError, RunLocked
from birdsed.fsutil import run_lock
from birdsed.infer.outputs import OutputSpec, combine
from birdsed.infer.parts import recorded_parts
from birdsed.infer.shard import finished, missing_shards, partition_path, shared_partition
from birdsed.model.meta import model_digest, read_model_meta

log = logging.getLogger(__name__)


def merge_if_complete(out: Path) -> bool:
    """After a shard: build the combined outputs when every shard has finished (the last one to finish does; a
    shard finishing beside a merge in progress leaves it to that one). True when they were built."""
    n, records = finished(out)
    if missing_shards(n, records):
        return False
    try:
        with run_lock(out, ".lock-merge"):
            merge(out)
    except RunLocked:
        log.info("%s: another shard is merging", out)
        return False
    return True


def unaccounted(
    out: Path, n: int, files: list[str], done: list[str], errors: set[tuple[str, ...]]
) -> list[tuple[str, str]]:
    """(recording, why) for each recording of the shards' input set (shard.py's partition) or of a shard's files
    that is neither in the merged outputs nor an error of its shard: never dropped without a word."""
    path = partition_path(out, n)
    in_set = {f for s in shared_partition(out, [], n) for f in s} if path.is_file() else set()
    accounted = set(done) | {e[0] for e in errors}
    return [
        (f, "in the shards' input set but in no shard's outputs") for f in sorted((in_set | set(files)) - accounted)
    ]


def merge(out: str | Path) -> tuple[int, int]:
    """`birdsed merge OUT`: the combined outputs of every shard's parts (refused while a shard is missing).
    Returns (recordings merged, errors)."""
    out = Path(out)
    n, records = finished(out)
    missing = missing_shards(n, records)
    if missing:
        raise BirdsedError(
            f"{out}: shard(s) {missing} of {n} have not finished ({out / 'shards'}); run them "
            f"(predict --shard I/{n} with the same inputs), then merge"
        )
    specs = {json.dumps(r["spec"], sort_keys=True) for r in records}
    if len(specs) > 1:
        raise BirdsedError(f"{out}: the shards were run with different output options; run them with the same ones")
    try:
        run = json.loads((out / "run.json").read_text())
    except (OSError, ValueError) as e:
        raise BirdsedError(f"{out / 'run.json'}: unreadable ({e})") from e
    model_dir = Path(run["model"])
    meta = read_model_meta(model_dir) if (model_dir / "model.json").is_file() else None
    if meta is None or model_digest(model_dir, meta) != run["model_sha256"]:
        raise BirdsedError(
            f"{model_dir}: the model the shards ran is not there, or changed; merge needs it "
            "(its thresholds decide the detections)"
        )
    files = sorted({f for r in records for f in r["files"]})
    errors = {tuple(e) for r in records for e in r["errors"]}
    name_of = {f: name for r in records for f, name in r.get("parts", {}).items()}
    done = [(f, p) for f, p in recorded_parts(out / "parts", files, name_of).items() if p.is_file()]
    errors = sorted(errors | set(unaccounted(out, n, files, [f for f, _ in done], errors)))
    combine(out, done, errors, run["classes"], meta, OutputSpec.from_dict(records[0]["spec"]))
    return len(done), len(errors)

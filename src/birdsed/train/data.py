"""A training run's data: the prepared store (made from a data-set folder when needed), the validation split,
the optional subsample, and the classes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from birdsed.config import Config
from birdsed.data.manifest import Manifest, read_dataset
from birdsed.data.sampling import stratified_split
from birdsed.data.store import AudioStore, is_store, prepare
from birdsed.errors import StoreError

log = logging.getLogger(__name__)


@dataclass
class TrainData:
    store: AudioStore
    train: Manifest
    val: Manifest
    val_store: AudioStore
    classes: list[str]

    def identity(self) -> dict[str, list[str]]:
        """What the run reads, as its checkpoints keep it (checkpoint.check_same_data): the classes, and the
        training and validation recordings' ids (sorted)."""
        return {
            "classes": list(self.classes),
            "train": sorted(map(str, self.train.table["recording_id"])),
            "val": sorted(map(str, self.val.table["recording_id"])),
        }


def _open_or_prepare(data: Path, dest: Path, workers: int | None, allow_outside: bool = False) -> AudioStore:
    if is_store(data):
        return AudioStore(data)
    result = prepare(read_dataset(data, allow_outside=allow_outside), dest, workers=workers)
    log.info(result.summary())
    store = AudioStore(dest)
    report = store.report()
    if len(report):
        log.warning("%d recording(s) could not be decoded and are left out; see %s", len(report), dest / "report.csv")
    return store


def load_train_data(data: Path, run: Path, cfg: Config, val_data: Path | None = None) -> TrainData:
    """The training and validation recordings of `data` (prepared into run/store unless a store already), `cfg`
    checked by the caller (train())."""
    store = _open_or_prepare(Path(data), run / "store", cfg.train.workers or None, cfg.data.allow_outside_paths)
    manifest = store.manifest()
    if len(manifest) == 0:
        raise StoreError(f"{data}: no usable recordings")
    if val_data is not None:
        val_store = _open_or_prepare(
            Path(val_data), run / "val_store", cfg.train.workers or None, cfg.data.allow_outside_paths
        )
        train_m, val_m = manifest, val_store.manifest()
    else:
        tr, va = stratified_split(manifest, cfg.data.val_fraction, cfg.data.val_split_seed(cfg.train.seed))
        train_m, val_m, val_store = manifest.subset(tr), manifest.subset(va), store
    if cfg.data.subsample < 1.0:
        bag, _ = stratified_split(train_m, 1.0 - cfg.data.subsample, cfg.train.seed)
        log.info(
            "training on %d of %d recordings (data.subsample=%g, seed %d)",
            bag.sum(),
            len(train_m),
            cfg.data.subsample,
            cfg.train.seed,
        )
        train_m = train_m.subset(bag)
    classes = sorted(set(manifest.classes) | set(val_m.classes))
    return TrainData(store, train_m, val_m, val_store, classes)

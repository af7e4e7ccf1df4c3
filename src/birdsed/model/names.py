"""Species names: any name a class goes by (an eBird code, a scientific or common name, BirdNET's
"Scientific_Common" label, a data set's own code listed in its species.csv) -> its code, common and scientific names.

Built from what ships with birdsed (model/birdnet_ebird_codes.csv: BirdNET V2.4's 6,522 labels with their eBird
codes), so it needs neither the birdnet extra nor a network. A species list is read through `read_species_list`:
names that match nothing get the closest known names suggested; two names of one species become one class.

    names = Names.default()
    names.lookup("woothr")                 # Species(code='woothr', common='Wood Thrush', scientific='Hylocichla ...')
    names.suggest("Wood Thursh")           # ['Wood Thrush', ...]
"""

from __future__ import annotations

import csv
import difflib
import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from birdsed.config.choices import SPECIES_NAMES
from birdsed.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

CODES_TABLE = "model/birdnet_ebird_codes.csv"

SYNONYMS_TABLE = "model/birdnet_synonyms.csv"  # former scientific names -> BirdNET V2.4's (e.g. Sylvia -> Curruca)


@dataclass(frozen=True)
class Species:
    """One species' names; `label` is BirdNET's "Scientific_Common" ("" for a species BirdNET does not know)."""

    code: str
    common: str
    scientific: str
    label: str = ""


def norm_name(name: str) -> str:
    """Case, spaces, hyphens, underscores and apostrophes do not matter when names are matched."""
    return re.sub(r"[\s_\-']+", " ", name).strip().casefold()


def species_of_label(label: str, code: str = "") -> Species:
    """A BirdNET label "Scientific_Common" as a Species."""
    scientific, _, common = label.partition("_")
    return Species(code or scientific, common or scientific, scientific, label)


@dataclass
class Names:
    """Every known species, and every name each answers to."""

    species: list[Species]
    index: dict[str, int] = field(default_factory=dict)  # norm_name(any name) -> position in `species`
    shown: dict[str, str] = field(default_factory=dict)  # norm_name -> the name as written (for suggestions)

    def __post_init__(self) -> None:
        for i, s in enumerate(self.species):
            for name in (s.code, s.scientific, s.common, s.label):
                self.add(name, i)
        for old, i in former_names(self.index):  # after every real name, which keeps its own species
            self.add(old, i)

    def add(self, name: str, i: int) -> None:
        """`name` answers to species i (the first species to claim a name keeps it)."""
        if name:
            self.index.setdefault(norm_name(name), i)
            self.shown.setdefault(norm_name(name), name)

    @classmethod
    def default(cls) -> Names:
        """BirdNET V2.4's labels and their eBird codes, from the table shipped with birdsed."""
        return cls(list(_shipped_species()))

    def with_aliases(self, aliases: dict[str, list[str]]) -> Names:
        """A copy where each own code (a data set's class) answers to the species one of its names matches; own codes
        that match nothing become species of their own, named by their names (own_species)."""
        out = Names(list(self.species))
        for own, others in aliases.items():
            hit = next((out.index[norm_name(n)] for n in [own, *others] if norm_name(n) in out.index), None)
            if hit is None:
                out.species.append(own_species(own, others))
                hit = len(out.species) - 1
            out.add(own, hit)
            for n in others:
                out.add(n, hit)
        return out

    def lookup(self, name: str) -> Species | None:
        """The species `name` is one of the names of, or None."""
        i = self.index.get(norm_name(name))
        return None if i is None else self.species[i]

    def describe(self, name: str) -> Species:
        """`name`'s species, or one that carries only `name` (so that every class has a row to print)."""
        return self.lookup(name) or Species(name, "", "")

    def suggest(self, name: str, n: int = 3) -> list[str]:
        """Up to n known names for `name`, one per species: first the names it ends (the group a common name ends
        in: "Robin" -> "Indian Robin", "European Robin", shortest first), then the closest (difflib's ratio, at least
        0.6); eBird codes only for what is written as one ("Robin" is no typo of "trokin")."""
        q = norm_name(name)
        as_code = bool(CODE.fullmatch(name.strip()))
        pool = [k for k, shown in self.shown.items() if as_code or not CODE.fullmatch(shown)]
        ending = sorted(
            (k for k in pool if k != q and k.endswith(" " + q) and "_" not in self.shown[k]), key=lambda k: (len(k), k)
        )
        close = ending[: 4 * n] + difflib.get_close_matches(q, pool, n=4 * n, cutoff=0.6)
        first = {}  # one name per species: the closest
        for c in close:
            first.setdefault(self.index[c], self.shown[c])
        return list(first.values())[:n]


SCIENTIFIC = re.compile(r"[A-Z][a-z]+ [a-z]")  # how a scientific name starts: "Genus epithet"
CODE = re.compile(r"[a-z0-9]+")  # an eBird code (combuz1): no common name


def own_species(own: str, names: list[str]) -> Species:
    """A data set's own class that no known species answers to, named by its further names (its species.csv's, in
    dataset_aliases' order: scientific names first): the scientific name the first that reads as one, the common name
    the first other that is not a code; "" for what they lack. (Cicorn_song, ["Cicada orni", "Grey Cicada"]) ->
    Species("Cicorn_song", "Grey Cicada", "Cicada orni")."""
    scientific = next((n.strip() for n in names if SCIENTIFIC.match(n.strip())), "")
    common = next((n.strip() for n in names if n.strip() not in ("", scientific) and not CODE.fullmatch(n.strip())), "")
    return Species(own, common, scientific)


@lru_cache(maxsize=1)
def _synonym_rows() -> tuple[dict[str, str], ...]:
    with resources.files("birdsed").joinpath(SYNONYMS_TABLE).open(encoding="utf-8") as f:
        return tuple(csv.DictReader(f))


def synonyms() -> dict[str, str]:
    """Former scientific names -> the name BirdNET V2.4 uses (model/birdnet_synonyms.csv, shipped with birdsed): genera
    split since older field guides and data sets were written (Sylvia melanocephala is Curruca melanocephala, Parus
    caeruleus Cyanistes caeruleus), so that a data set's names find BirdNET's labels."""
    return {row["name"]: row["birdnet_name"] for row in _synonym_rows()}


def former_names(index: dict[str, int]) -> list[tuple[str, int]]:
    """(former name, what its BirdNET name is at in `index`: norm_name -> a species or label) for every synonym whose
    BirdNET name `index` holds; added after every real name, which keeps its own place."""
    return [(old, index[norm_name(new)]) for old, new in synonyms().items() if norm_name(new) in index]


@lru_cache(maxsize=1)
def _synonym_notes() -> dict[str, str]:
    return {norm_name(row["name"]): row["note"] for row in _synonym_rows() if row.get("note")}


def synonym_note(name: str) -> str:
    """What a user should know when `name` is taken as BirdNET's name through the synonyms table: its note, set where
    the former name covered more than BirdNET's species (a species split since; e.g. Sylvia cantillans, the Subalpine
    Warbler of both sides of the Mediterranean, taken as the western Curruca iberiae); "" for the rest."""
    return _synonym_notes().get(norm_name(name), "")


@lru_cache(maxsize=1)
def _shipped_species() -> tuple[Species, ...]:
    with resources.files("birdsed").joinpath(CODES_TABLE).open(encoding="utf-8") as f:
        return tuple(species_of_label(row["label"], row["ebird_code"]) for row in csv.DictReader(f))


@dataclass
class SpeciesList:
    """A species list as read: its classes (one per species, in the list's order), the names folded into an
    earlier one of the same species, and the names that match nothing with suggestions."""

    classes: list[str]
    merged: list[tuple[str, str]]  # (name dropped, the class it is the same species as)
    unknown: dict[str, list[str]]  # name -> closest known names
    noted: dict[str, str] = field(default_factory=dict)  # former name -> what taking it as BirdNET's name means

    def messages(self, where: str) -> list[str]:
        """What to tell the user, each said once."""
        out = [f"{where}: {name!r} {said}" for name, said in self.noted.items()]
        out += [
            f"{where}: {a!r} is listed twice: kept once"
            if a == b
            else f"{where}: {a!r} and {b!r} are one species: kept as one class, {b!r}"
            for a, b in dict.fromkeys(self.merged)
        ]
        for name, close in self.unknown.items():
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            out.append(f"{where}: {name!r} matches no known species name{hint}")
        return out


def resolve_names(names: list[str], known: Names | None = None) -> SpeciesList:
    """Fold the names of one species into one class (the first written), and collect the unknown ones with
    suggestions; unknown names stay classes (a user's own code)."""
    known = known or Names.default()
    classes: list[str] = []
    merged: list[tuple[str, str]] = []
    unknown: dict[str, list[str]] = {}
    first_of: dict[Species | str, str] = {}
    noted: dict[str, str] = {}
    for name in names:
        sp = known.lookup(name)
        if sp is not None and (note := synonym_note(name)):
            noted[name] = f"is taken as {sp.scientific} ({sp.common}): {note}"
        key: Species | str = sp if sp is not None else norm_name(name)
        if key in first_of:
            merged.append((name, first_of[key]))
            continue
        first_of[key] = name
        classes.append(name)
        if sp is None:
            unknown[name] = known.suggest(name)
    return SpeciesList(classes, merged, unknown, noted)


def read_species_list(path: str | Path, known: Names | None = None) -> SpeciesList:
    """A species file (one name a line, # starts a comment) resolved by `resolve_names`; what it folded or did not
    know is logged, each once."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: species file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason})") from e
    names = [n for n in (line.split("#")[0].strip() for line in lines) if n]
    if not names:
        raise ConfigError(f"{path}: no species names in it (one a line)")
    found = resolve_names(names, known)
    for message in found.messages(str(path)):
        log.warning("%s", message)
    return found


@dataclass(frozen=True)
class ClassNames:
    """A model's classes with their species' names, and which name the tables' species column shows."""

    species: dict[str, Species]  # class -> its species (only the class itself when unknown)
    shown: str | None = None  # "code", "common" or "scientific" (config.SPECIES_NAMES); None: the class as named

    def of(self, label: str) -> Species:
        return self.species.get(label) or Species(label, "", "")

    def show(self, label: str) -> str:
        """The name a table shows for a class: the one chosen, or the class itself where that name is unknown."""
        return (getattr(self.of(label), self.shown) if self.shown else "") or label


def class_names(classes: list[str], meta: dict | None = None, shown: str | None = None) -> ClassNames:
    """Each class's species: by its own name, else by the name a BirdNET model matched it through (model.json's
    birdnet.via: e.g. a data set's species.csv names Aegcau_call "Aegithalos caudatus"), else by the further names a
    trained model keeps of it (model.json's aliases, its data set's species.csv: Butbut_call -> ["Buteo buteo",
    "Common Buzzard"]): the species one of them is, or one named by them (own_species)."""
    if shown is not None and shown not in SPECIES_NAMES:
        raise ConfigError(f"names {shown!r}: valid: {list(SPECIES_NAMES)}")
    known = Names.default()
    via = list((meta or {}).get("birdnet", {}).get("via", [])) if isinstance(meta, dict) else []
    via = via if len(via) == len(classes) else [""] * len(classes)
    aliases = _model_aliases(meta)
    named = known.with_aliases({c: aliases[c] for c in classes if c in aliases}) if aliases else known
    out = {}
    for c, v in zip(classes, via):
        sp = known.lookup(c) or (known.lookup(v) if v else None) or named.lookup(c)
        out[c] = sp if sp is not None else Species(c, "", "")
    return ClassNames(out, shown)


def _model_aliases(meta: dict | None) -> dict[str, list[str]]:
    """model.json's further names per class ({} when it has none); a malformed entry costs only the names, said."""
    from birdsed.model.birdnet_labels import model_aliases  # it imports this module

    try:
        return model_aliases(meta) if isinstance(meta, dict) else {}
    except ModelError as e:
        log.warning("%s: the classes are shown by their own names", e)
        return {}

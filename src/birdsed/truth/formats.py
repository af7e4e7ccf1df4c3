"""The annotation formats people keep, each read into an event table (events.py): one unit per format, behind
one interface: NAME, sniff(path) -> bool (does this file look like the format), read(path, label_column) ->
(events, the recordings it covers: a per-recording table covers its recording even when it holds no event).

- raven      Raven Pro selection tables (tab-separated; "Begin Time (s)", "End Time (s)", optional "Low Freq (Hz)",
             "High Freq (Hz)"). One table per recording (the recording is the table's name before ".Table.", or
             before ".selections" / ".txt") or one for many, with a "Begin Path" or "Begin File" column (then the
             time within the file is "File Offset (s)" when present). Raven lists every selection once per view:
             only the spectrogram view's rows are read. The label column: --label-column, else the first of
             RAVEN_LABEL_COLUMNS present. Raven's format: the Raven Pro 1.6 user manual, chapter "Selection tables";
             the view rule as warbleR's imp_raven(only.spectro.view = TRUE).
- audacity   Audacity label tracks (start<TAB>end<TAB>label per line, no header; a line "\\<TAB>low<TAB>high" after a
             label gives its frequency bounds, as Audacity's spectral selections write them). The recording is the
             file's name without ".txt". Format: Audacity manual, "Importing and exporting labels".
- table      a plain CSV: file, start_s, end_s, label, and optionally low_hz, high_hz (birdsed's own detections.csv
             is one: its score column is not read).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pandas as pd

from birdsed.data.manifest import repeated_columns
from birdsed.errors import TruthError
from birdsed.rows import plain_cell
from birdsed.truth.events import event_table

RAVEN_LABEL_COLUMNS = ("Species", "Annotation", "Label", "Class", "Species Code", "Common Name", "Sound Type", "ID")
RAVEN_FILE_COLUMNS = ("Begin Path", "Begin File")
TABLE_COLUMNS = ("file", "start_s", "end_s", "label")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        return path.read_text(encoding="latin-1")  # Raven on Windows writes the system code page
    except OSError as e:
        raise TruthError(f"{path}: cannot read ({e.strerror or e})") from e


def _head(path: Path, n_bytes: int = 16_384) -> str:
    """The start of a table (enough to sniff its format: its header, or its first lines), decoded as _read_text
    decodes the whole; a line cut at n_bytes is left out."""
    try:
        with open(path, "rb") as f:
            raw = f.read(n_bytes)
    except OSError as e:
        raise TruthError(f"{path}: cannot read ({e.strerror or e})") from e
    if len(raw) == n_bytes:
        raw = raw[: raw.rfind(b"\n") + 1] or raw
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:  # also a multi-byte character cut at n_bytes: sniffing only needs ASCII
        return raw.decode("latin-1")


def is_blank(path: Path) -> bool:
    """A .txt file with nothing in it (Audacity's export of a recording with no labels): no calls, no format."""
    return path.suffix.lower() == ".txt" and not _head(path).strip()


def recording_of(table: Path) -> str:
    """The recording a per-recording table is named after: 'XC1.Table.1.selections.txt' -> 'XC1'."""
    name = table.name
    for cut in (".Table.", ".selections", ".txt", ".csv"):
        if cut in name:
            name = name[: name.index(cut)]
    return name


class Raven:
    NAME = "raven"

    @staticmethod
    def sniff(path: Path) -> bool:
        head = _head(path).split("\n", 1)[0]
        return "\t" in head and "Begin Time (s)" in head

    @staticmethod
    def read(path: Path, label_column: str | None = None) -> tuple[pd.DataFrame, list[str]]:
        rows = list(csv.reader(_read_text(path).splitlines(), delimiter="\t"))
        if not rows:
            raise TruthError(f"{path}: empty selection table")
        header = [h.strip() for h in rows[0]]
        df = (
            pd.DataFrame(
                [r + [""] * (len(header) - len(r)) for r in rows[1:] if any(c.strip() for c in r)],
                columns=header,
                dtype=str,
            )
            if len(rows) > 1
            else pd.DataFrame(columns=header, dtype=str)
        )
        df["where"] = [f"{path}: line {i + 2}" for i in range(len(df))]
        lacking = [c for c in ("Begin Time (s)", "End Time (s)") if c not in header]
        if lacking:
            raise TruthError(f"{path}: a Raven selection table needs {lacking}; its columns are {header}")
        label = label_column or next((c for c in RAVEN_LABEL_COLUMNS if c in header), None)
        if label is None or label not in header:
            raise TruthError(
                f"{path}: no label column {label_column!r}"
                if label_column
                else f"{path}: no label column (looked for {list(RAVEN_LABEL_COLUMNS)}; pass --label-column); "
                f"its columns are {header}"
            )
        if "View" in header and df["View"].str.startswith("Spectrogram").any():
            df = df[df["View"].str.startswith("Spectrogram")]
        begin, end = df["Begin Time (s)"], df["End Time (s)"]
        file_col = next((c for c in RAVEN_FILE_COLUMNS if c in header), None)
        if file_col is not None:
            files = df[file_col]
            if "File Offset (s)" in header:  # times from the start of a table of many files -> within each file
                offset = pd.to_numeric(df["File Offset (s)"], errors="coerce")
                length = pd.to_numeric(end, errors="coerce") - pd.to_numeric(begin, errors="coerce")
                begin, end = offset, offset + length
        else:
            files = [recording_of(path)] * len(df)
        events = event_table(
            files,
            list(begin),
            list(end),
            list(df[label]),
            list(df["where"]),
            list(df["Low Freq (Hz)"]) if "Low Freq (Hz)" in header else None,
            list(df["High Freq (Hz)"]) if "High Freq (Hz)" in header else None,
        )
        if file_col is None:
            return events, [recording_of(path)]
        # a table of no selections (its header alone) covers the recording it is named after (Raven names a table of
        # one sound SOUND.Table.1.selections.txt): annotated, no calls; a table of many sounds names none then
        alone = not len(df) and ".Table." in path.name
        return events, [recording_of(path)] if alone else sorted(set(files))


_NUMBER = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"
_AUDACITY_LINE = re.compile(rf"^\s*{_NUMBER}\t{_NUMBER}(\t.*)?$")


class Audacity:
    NAME = "audacity"

    @staticmethod
    def sniff(path: Path) -> bool:
        lines = [x for x in _head(path).splitlines()[:20] if x.strip()]
        return bool(lines) and all(_AUDACITY_LINE.match(x) or x.startswith("\\\t") for x in lines)

    @staticmethod
    def read(path: Path, label_column: str | None = None) -> tuple[pd.DataFrame, list[str]]:
        starts, ends, labels, where, lows, highs = [], [], [], [], [], []
        for i, line in enumerate(_read_text(path).splitlines()):
            if not line.strip():
                continue
            parts = line.rstrip("\r").split("\t")
            if parts[0] == "\\":  # the frequency line of the label above
                if not starts or len(parts) < 3:
                    raise TruthError(f"{path}: line {i + 1}: a frequency line with no label above it")
                lows[-1], highs[-1] = parts[1], parts[2]
                continue
            if len(parts) < 2:
                raise TruthError(f"{path}: line {i + 1}: {line[:60]!r} is not start<TAB>end<TAB>label")
            starts.append(parts[0])
            ends.append(parts[1])
            labels.append(parts[2] if len(parts) > 2 else "")
            where.append(f"{path}: line {i + 1}")
            lows.append("")
            highs.append("")
        return event_table([recording_of(path)] * len(starts), starts, ends, labels, where, lows, highs), [
            recording_of(path)
        ]


class Table:
    NAME = "table"

    @staticmethod
    def sniff(path: Path) -> bool:
        head = _head(path).split("\n", 1)[0]
        return all(c in [h.strip() for h in head.split(",")] for c in TABLE_COLUMNS)

    @staticmethod
    def read(path: Path, label_column: str | None = None) -> tuple[pd.DataFrame, list[str]]:
        repeated = repeated_columns(path)
        if repeated:
            raise TruthError(f"{path}: column(s) {repeated} appear more than once in the header; keep one of each")
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
            raise TruthError(f"{path}: not a readable CSV ({e})") from e
        label = label_column or "label"
        lacking = [c for c in (*TABLE_COLUMNS[:3], label) if c not in df.columns]
        if lacking:
            raise TruthError(
                f"{path}: an event table needs the column(s) {lacking}; its columns are {list(df.columns)}"
            )
        for c in ("file", label):  # a table predict wrote (detections.csv): its cells as they were (writers.py)
            df[c] = df[c].map(plain_cell)
        where = [f"{path}: line {i + 2}" for i in range(len(df))]
        events = event_table(
            df["file"],
            list(df["start_s"]),
            list(df["end_s"]),
            list(df[label]),
            where,
            list(df["low_hz"]) if "low_hz" in df.columns else None,
            list(df["high_hz"]) if "high_hz" in df.columns else None,
        )
        return events, sorted(set(df["file"]))


FORMATS = {f.NAME: f for f in (Raven, Audacity, Table)}

"""Where and when each recording was made: its site, latitude, longitude, time zone and start time, from a sites table
or one place for every recording, and from the recording's file name. Pure functions over file paths: nothing here
opens a recording.

    places = Places.from_options(PlaceOptions(sites="sites.csv", timezone="Europe/Paris"))
    places.of("/data/siteA/20230615_053000.WAV")
    # RecordingPlace(site='A', lat=43.6, lon=3.9, timezone='Europe/Paris', start=datetime(2023, 6, 15, 5, 30, ...))

The sites table (CSV): `pattern, site, lat, lon[, timezone][, start]`, one row per site (or per recording). A row's
`pattern` is a glob (`*`, `?`, `[...]`) matched from the right against each recording's path and each folder above it
(pathlib's PurePath.match): `siteA` names every recording under a folder siteA, `siteA/*.wav` the wav files in it,
`SMM01234_*` a recorder's files; an absolute pattern matches the whole path. A recording matched by no row has no
site; one matched by two rows is refused (ambiguous); a row matching no recording is said.

The start time: the table's `start` column (ISO 8601, its own offset or the row's time zone), else the file name:
`--time-pattern` (strptime's %Y %y %m %d %j %H %M %S; it may hold `/` to read folders too), else AudioMoth's
`YYYYMMDD_HHMMSS` and Song Meter's `PREFIX_YYYYMMDD_HHMMSS`. A clock time is read in the row's time zone, else
`--timezone`, else UTC (AudioMoth's clock). A name whose time does not parse leaves the start unknown (said once,
with examples), and the run goes on.
"""

from __future__ import annotations

import csv
import fnmatch
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from functools import cached_property
from pathlib import Path, PurePath
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from birdsed.errors import ConfigError

DEFAULT_TIMEZONE = "UTC"  # AudioMoth's clock; a Song Meter's is local: give --timezone
SITES_COLUMNS = ("pattern", "site", "lat", "lon")  # required; then optional timezone, start
# AudioMoth (YYYYMMDD_HHMMSS) and Song Meter (PREFIX_YYYYMMDD_HHMMSS): 8 digits, _ or T, 6 digits, no digit around
RECORDER_TIME = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})[_T](\d{2})(\d{2})(\d{2})(?!\d)")
# strptime directives --time-pattern understands: the regex of each field
DIRECTIVES = {
    "Y": r"(?P<Y>\d{4})",
    "y": r"(?P<y>\d{2})",
    "m": r"(?P<m>\d{1,2})",
    "d": r"(?P<d>\d{1,2})",
    "j": r"(?P<j>\d{3})",
    "H": r"(?P<H>\d{1,2})",
    "M": r"(?P<M>\d{2})",
    "S": r"(?P<S>\d{2})",
}
EXAMPLES_SHOWN = 3


def check_lat_lon(lat: float, lon: float, where: str = "") -> tuple[float, float]:
    """(lat, lon) when both are finite and in range (-90..90, -180..180), else a ConfigError naming them."""
    at = f"{where}: " if where else ""
    if not (math.isfinite(lat) and -90 <= lat <= 90):
        raise ConfigError(f"{at}latitude {lat:g}: must be a number from -90 to 90")
    if not (math.isfinite(lon) and -180 <= lon <= 180):
        raise ConfigError(f"{at}longitude {lon:g}: must be a number from -180 to 180")
    return lat, lon


def zone(name: str, where: str = "") -> tzinfo:
    """A time zone by its IANA name (Europe/Paris), UTC, or a fixed offset (+02:00, -0700); a ConfigError for one
    that does not exist."""
    fixed = re.fullmatch(r"(?:UTC)?([+-])(\d{2}):?(\d{2})", name.strip())
    if fixed:
        sign = 1 if fixed[1] == "+" else -1
        hours, minutes = int(fixed[2]), int(fixed[3])
        if hours <= 14 and minutes < 60:
            return timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError) as e:
        at = f"{where}: " if where else ""
        raise ConfigError(
            f"{at}time zone {name!r} does not exist: give an IANA name (Europe/Paris, America/Los_Angeles), UTC, "
            "or an offset such as +02:00"
        ) from e


def time_regex(pattern: str) -> re.Pattern[str]:
    """A --time-pattern (strptime-like, e.g. `%Y%m%d_%H%M%S` or `site-%Y-%m-%d/%H%M`) as a regex searched in a name;
    a ConfigError for a directive it does not know or a pattern without a date."""
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "%" and i + 1 < len(pattern):
            d = pattern[i + 1]
            if d == "%":
                out.append("%")
            elif d in DIRECTIVES:
                if f"(?P<{d}>" in "".join(out):
                    raise ConfigError(f"--time-pattern {pattern!r}: %{d} given twice")
                out.append(DIRECTIVES[d])
            else:
                raise ConfigError(
                    f"--time-pattern {pattern!r}: %{d} is not understood; use {' '.join('%' + k for k in DIRECTIVES)}"
                )
            i += 2
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    regex = "".join(out)
    if not ("(?P<Y>" in regex or "(?P<y>" in regex) or not ("(?P<j>" in regex or "(?P<m>" in regex):
        raise ConfigError(f"--time-pattern {pattern!r}: needs a year (%Y or %y) and a month and day (%m %d) or %j")
    return re.compile(regex)


def _fields_time(g: dict[str, str]) -> datetime | None:
    """A clock time from the matched fields, or None when they are no date (month 13, 31 June)."""
    year = int(g["Y"]) if g.get("Y") else 2000 + int(g["y"])
    try:
        day = (
            datetime(year, 1, 1) + timedelta(days=int(g["j"]) - 1)
            if g.get("j")
            else datetime(year, int(g["m"]), int(g["d"]))
        )
        return day.replace(hour=int(g.get("H") or 0), minute=int(g.get("M") or 0), second=int(g.get("S") or 0))
    except ValueError:
        return None


def name_time(path: str | PurePath, pattern: re.Pattern[str] | None = None) -> datetime | None:
    """The clock time a recording's name says it started (no time zone), or None. With `pattern` (time_regex), that
    pattern searched in the stem (in the whole path when it holds /); else AudioMoth's and Song Meter's."""
    p = PurePath(path)
    if pattern is not None:
        text = p.with_suffix("").as_posix() if "/" in pattern.pattern else p.stem
        found = pattern.search(text)
        if found is None or (found.groupdict().get("j") and found["j"] == "000"):
            return None
        return _fields_time(found.groupdict())
    found = RECORDER_TIME.search(p.stem)
    if found is None:
        return None
    y, mo, d, h, mi, s = (int(x) for x in found.groups())
    try:
        return datetime(y, mo, d, h, mi, s)
    except ValueError:
        return None


@dataclass(frozen=True)
class RecordingPlace:
    """Where and when one recording was made (what is known: "" / None otherwise). `start` carries its time zone."""

    site: str = ""
    lat: float | None = None
    lon: float | None = None
    timezone: str = ""  # the name the start's clock time was read in ("" when the start is unknown)
    start: datetime | None = None

    def time_at(self, offset_s: float) -> datetime | None:
        """The date and time `offset_s` seconds into the recording, in its time zone (None when its start is
        unknown)."""
        if self.start is None:
            return None
        # in UTC, then back: the same tzinfo's arithmetic is wall-clock, wrong across a change of summer time
        utc = self.start.astimezone(timezone.utc) + timedelta(seconds=float(offset_s))
        return utc.astimezone(self.start.tzinfo)

    def iso_at(self, offset_s: float) -> str:
        """time_at as ISO 8601 with its offset (2023-06-15T05:30:05+02:00), "" when unknown."""
        t = self.time_at(offset_s)
        return "" if t is None else t.isoformat()


@dataclass(frozen=True)
class SiteRow:
    """One row of a sites table."""

    line: int  # its line in the file, to name it
    pattern: str
    site: str
    lat: float
    lon: float
    timezone: str = ""
    start: str = ""

    @cached_property
    def _parts(self) -> tuple[bool, list[re.Pattern[str]]]:
        """(absolute, one compiled glob per part of the pattern)."""
        pattern = PurePath(self.pattern)
        parts = [part for part in pattern.parts if part != pattern.anchor]
        return pattern.is_absolute(), [re.compile(fnmatch.translate(part)) for part in parts]

    def matches_path(self, parts: tuple[str, ...]) -> bool:
        """The pattern matches this path (its parts, the anchor first) from the right (PurePath.match, precompiled:
        a sites table is matched against every recording of an archive)."""
        absolute, globs = self._parts
        names = parts[1:] if parts and parts[0] == "/" else parts
        if len(globs) > len(names) or (absolute and len(globs) != len(names)) or not globs:
            return False
        return all(g.match(n) for g, n in zip(globs, names[len(names) - len(globs) :]))


@dataclass(frozen=True)
class PlaceOptions:
    """What predict is told of places and times (saved with its output options, so that merge does the same)."""

    sites: str | None = None  # a sites table (CSV)
    site: tuple[float, float] | None = None  # one latitude, longitude for every recording (--site LAT,LON)
    time_pattern: str | None = None  # strptime-like; default AudioMoth's and Song Meter's names
    timezone: str | None = None  # the recorders' clock; default UTC

    @classmethod
    def from_dict(cls, d: dict | None) -> PlaceOptions:
        d = dict(d or {})
        if d.get("site") is not None:
            d["site"] = tuple(d["site"])
        return cls(**d)

    def to_dict(self) -> dict:
        return {**asdict(self), "site": list(self.site) if self.site else None}

    @property
    def given(self) -> bool:
        """The user said something of places or times (then names whose time does not parse are said)."""
        return any(v is not None for v in (self.sites, self.site, self.time_pattern, self.timezone))


def read_sites(path: str | Path) -> list[SiteRow]:
    """A sites table's rows, each checked (lat / lon in range, the time zone exists); a ConfigError naming the file,
    the line and the value."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--sites {path}: file not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            lacking = [c for c in SITES_COLUMNS if c not in columns]
            if lacking:
                raise ConfigError(
                    f"{path}: no column(s) {lacking}; a sites table has pattern, site, lat, lon[, timezone][, start]"
                )
            rows = [
                _site_row(
                    {k.strip(): (v or "").strip() for k, v in r.items() if k},
                    f"{path}:{reader.line_num}",
                    reader.line_num,
                )
                for r in reader
            ]
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason})") from e
    except csv.Error as e:
        raise ConfigError(f"{path}: not a readable CSV ({e})") from e
    if not rows:
        raise ConfigError(f"{path}: no sites in it (pattern, site, lat, lon[, timezone][, start])")
    return rows


def _site_row(r: dict[str, str], where: str, line: int) -> SiteRow:
    if not r["pattern"]:
        raise ConfigError(f"{where}: empty pattern")
    if any(unicodedata.category(ch) == "Cc" for ch in r["site"]):
        raise ConfigError(
            f"{where}: site {r['site']!r} holds a tab, line break or other control character, which splits a row of "
            "the Raven tables; rename it"
        )
    try:
        lat, lon = float(r["lat"]), float(r["lon"])
    except ValueError:
        raise ConfigError(f"{where}: lat {r['lat']!r}, lon {r['lon']!r}: not numbers") from None
    check_lat_lon(lat, lon, where)
    tz = r.get("timezone", "")
    if tz:
        zone(tz, where)
    start = r.get("start", "")
    if start:
        try:
            datetime.fromisoformat(start)
        except ValueError:
            raise ConfigError(f"{where}: start {start!r} is not an ISO 8601 date-time (2023-06-15T05:30:00)") from None
    return SiteRow(line, r["pattern"], r["site"] or r["pattern"], lat, lon, tz, start)


@dataclass
class Resolved:
    """Every recording's place and time, and what to tell the user of them."""

    places: dict[str, RecordingPlace]
    unmatched_rows: list[SiteRow] = field(default_factory=list)  # rows of the sites table matching no recording
    no_site: list[str] = field(default_factory=list)  # recordings no row matched
    no_time: list[str] = field(default_factory=list)  # recordings whose start is unknown
    utc_default: int = 0  # recordings whose clock time was read as UTC for want of a time zone

    def messages(self, opts: PlaceOptions) -> list[str]:
        """Each problem said once, with examples."""
        out = [
            f"{opts.sites}:{r.line}: pattern {r.pattern!r} (site {r.site!r}) matches no recording"
            for r in self.unmatched_rows
        ]
        if opts.sites and self.no_site:
            out.append(f"{_some(self.no_site)} match(es) no row of {opts.sites}: no site, latitude or longitude")
        timed = len(self.places) - len(self.no_time)
        if self.no_time and (opts.given or timed):
            how = f"--time-pattern {opts.time_pattern!r}" if opts.time_pattern else "YYYYMMDD_HHMMSS"
            out.append(
                f"{_some(self.no_time)}: no start time in the name ({how}): no date or time written for them "
                "(give --time-pattern, or a start column in --sites)"
            )
        if self.utc_default:
            out.append(
                f"{self.utc_default} recording(s): start times read from the names as UTC (AudioMoth's clock); "
                "give --timezone (or a timezone column in --sites) if the recorders kept local time"
            )
        return out


def _some(files: list[str]) -> str:
    shown = ", ".join(PurePath(f).name for f in files[:EXAMPLES_SHOWN])
    return f"{len(files)} recording(s) ({shown}{', ...' if len(files) > EXAMPLES_SHOWN else ''})"


@dataclass
class Places:
    """The rules that give recordings their places and times (from PlaceOptions)."""

    options: PlaceOptions = field(default_factory=PlaceOptions)
    rows: list[SiteRow] = field(default_factory=list)
    _folders: dict[tuple[str, ...], frozenset[int]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_options(cls, opts: PlaceOptions | None = None) -> Places:
        """Checked options (a ConfigError for a bad table, place, pattern or time zone) with the table read."""
        opts = opts or PlaceOptions()
        if opts.sites and opts.site:
            raise ConfigError("give --sites (a table) or --site LAT,LON, not both")
        if opts.site:
            check_lat_lon(*opts.site, "--site")
        if opts.timezone:
            zone(opts.timezone, "--timezone")
        places = cls(opts, read_sites(opts.sites) if opts.sites else [])
        places.pattern  # a bad --time-pattern is refused here
        return places

    @cached_property
    def pattern(self) -> re.Pattern[str] | None:
        return time_regex(self.options.time_pattern) if self.options.time_pattern else None

    def rows_of(self, path: str | PurePath) -> list[SiteRow]:
        """The rows whose pattern matches the recording's path or a folder above it."""
        parts = PurePath(path).parts
        above = self._folder_rows(parts[:-1])
        return [r for r in self.rows if r.line in above or r.matches_path(parts)]

    def _folder_rows(self, parts: tuple[str, ...]) -> frozenset[int]:
        """The lines of the rows matching this folder or one above it (remembered: an archive's recordings share
        their folders)."""
        if parts not in self._folders:
            above = self._folder_rows(parts[:-1]) if len(parts) > 1 else frozenset()
            here = {r.line for r in self.rows if r.matches_path(parts)} if parts and parts[-1] != "/" else set()
            self._folders[parts] = above | here
        return self._folders[parts]

    def of(self, path: str | PurePath) -> RecordingPlace:
        """One recording's place and time; a ConfigError when two rows of the table match it."""
        return self._place(path)[0]

    def _place(self, path: str | PurePath) -> tuple[RecordingPlace, SiteRow | None, bool]:
        """(the recording's place and time, the table's row that matched it, whether its clock's time zone was
        given rather than the UTC default)."""
        rows = self.rows_of(path)
        if len(rows) > 1:
            lines = " and ".join(f"line {r.line} ({r.pattern!r})" for r in rows[:2])
            raise ConfigError(
                f"{self.options.sites}: {path} is matched by {lines}: each recording must match one row "
                "(make the patterns narrower)"
            )
        row = rows[0] if rows else None
        site, lat, lon = (row.site, row.lat, row.lon) if row else ("", *(self.options.site or (None, None)))
        tz_name = (row.timezone if row else "") or self.options.timezone or DEFAULT_TIMEZONE
        tz = zone(tz_name)
        zoned = tz_name != DEFAULT_TIMEZONE or bool(self.options.timezone or (row and row.timezone))
        if row and row.start:
            t = datetime.fromisoformat(row.start)
            start, zoned = (t.astimezone(tz) if t.tzinfo else t.replace(tzinfo=tz)), zoned or t.tzinfo is not None
        else:
            clock = name_time(path, self.pattern)
            start = None if clock is None else clock.replace(tzinfo=tz)
        return RecordingPlace(site, lat, lon, tz_name if start else "", start), row, zoned

    def resolve(self, files: Iterable[str]) -> Resolved:
        """Every recording's place and time, the table's rows that match none, the recordings without a site or a
        time (a ConfigError when a recording matches two rows)."""
        out = Resolved({})
        used: set[int] = set()
        for f in files:
            place, row, zoned = self._place(f)
            out.places[f] = place
            if row is not None:
                used.add(row.line)
            elif self.rows:
                out.no_site.append(f)
            if place.start is None:
                out.no_time.append(f)
            elif not zoned:
                out.utc_default += 1
        out.unmatched_rows = [r for r in self.rows if r.line not in used]
        return out


def recording_place_time(path: str | PurePath, places: Places | None = None) -> RecordingPlace:
    """A recording's place (lat, lon: None when unknown) and start (an aware datetime, or None) under `places`
    (default: no table, the start from the name in UTC). For the prior: BirdNET's week is
    model.birdnet_range.week_of(start.month, start.day)."""
    return (places or Places()).of(path)

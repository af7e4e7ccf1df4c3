"""Places and times of recordings (places.py): sites tables, --site, start times from names, time zones, and what
bad input gives."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from birdsed.errors import ConfigError
from birdsed.places import (
    PlaceOptions,
    Places,
    name_time,
    read_sites,
    recording_place_time,
    time_regex,
    zone,
)


def _sites(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sites.csv"
    path.write_text(text)
    return str(path)


def test_audiomoth_and_song_meter_names_give_the_start():
    assert name_time("/d/20230615_053000.WAV") == datetime(2023, 6, 15, 5, 30, 0)
    assert name_time("/d/SMM01234_20230615_053012.wav") == datetime(2023, 6, 15, 5, 30, 12)
    assert name_time("/d/S4A01234_20190401T050000_extra.flac") == datetime(2019, 4, 1, 5, 0, 0)
    assert name_time("/d/nips4b_birds_trainfile001.flac") is None
    assert name_time("/d/20231315_053000.wav") is None  # month 13: no date
    assert name_time("/d/120230615_053000.wav") is None  # 9 digits: not a recorder's name


def test_a_time_pattern_reads_names_and_folders():
    assert name_time("/d/site-2023-06-15-0530.wav", time_regex("%Y-%m-%d-%H%M")) == datetime(2023, 6, 15, 5, 30)
    assert name_time("/d/2023_166/x.wav", time_regex("%Y_%j/")) == datetime(2023, 6, 15)  # a folder holds the date
    assert name_time("/d/2023_166/x_0700.wav", time_regex("%Y_%j/x_%H%M")) == datetime(2023, 6, 15, 7, 0)
    assert name_time("/d/230615.wav", time_regex("%y%m%d")) == datetime(2023, 6, 15)


def test_a_time_pattern_without_a_date_or_with_an_unknown_directive_is_refused():
    with pytest.raises(ConfigError, match="%Q is not understood"):
        time_regex("%Y%m%d_%Q")
    with pytest.raises(ConfigError, match="needs a year"):
        time_regex("%H%M%S")


def test_the_start_is_in_the_time_zone_given_and_utc_by_default():
    assert recording_place_time("/d/20230615_053000.wav").start == datetime(2023, 6, 15, 5, 30, tzinfo=timezone.utc)
    p = Places.from_options(PlaceOptions(site=(43.6, 3.9), timezone="Europe/Paris")).of("/d/20230615_053000.wav")
    assert (p.lat, p.lon, p.timezone) == (43.6, 3.9, "Europe/Paris")
    assert p.iso_at(65) == "2023-06-15T05:31:05+02:00"
    assert p.time_at(0).utcoffset() == timedelta(hours=2)
    assert (
        Places.from_options(PlaceOptions(timezone="-07:00")).of("/d/20230615_053000.wav").iso_at(0).endswith("-07:00")
    )


def test_a_time_across_a_change_of_summer_time_keeps_the_zone():
    p = Places.from_options(PlaceOptions(timezone="Europe/Paris")).of("/d/20230326_013000.wav")
    assert p.iso_at(3600) == "2023-03-26T03:30:00+02:00"  # 01:30 CET + 1 h = 03:30 CEST


def test_a_time_zone_that_does_not_exist_is_refused():
    with pytest.raises(ConfigError, match="time zone 'Mars/Olympus' does not exist"):
        Places.from_options(PlaceOptions(timezone="Mars/Olympus"))
    with pytest.raises(ConfigError, match="time zone"):
        zone("+25:00")


def test_a_sites_table_gives_each_recording_its_site_by_file_or_folder(tmp_path):
    sites = _sites(
        tmp_path,
        "pattern,site,lat,lon,timezone\nsiteA,A,43.6,3.9,Europe/Paris\nSMM0999_*,B,40.4,-3.7,\n",
    )
    places = Places.from_options(PlaceOptions(sites=sites))
    files = ["/d/siteA/20230615_053000.wav", "/d/x/SMM0999_20230615_060000.wav", "/d/x/other.wav"]
    found = places.resolve(files)
    a, b, other = (found.places[f] for f in files)
    assert (a.site, a.lat, a.lon, a.iso_at(0)) == ("A", 43.6, 3.9, "2023-06-15T05:30:00+02:00")
    assert (b.site, b.iso_at(0)) == ("B", "2023-06-15T06:00:00+00:00")
    assert (other.site, other.lat, other.start) == ("", None, None)
    assert found.no_site == ["/d/x/other.wav"] and found.no_time == ["/d/x/other.wav"]
    assert found.utc_default == 1  # B's clock time read as UTC: said
    said = "\n".join(found.messages(places.options))
    assert "other.wav" in said and "as UTC" in said


def test_a_sites_table_start_column_gives_the_start(tmp_path):
    sites = _sites(tmp_path, "pattern,site,lat,lon,timezone,start\nrec.wav,A,1,2,Europe/Paris,2023-06-15T05:00:00\n")
    p = Places.from_options(PlaceOptions(sites=sites)).of("/d/rec.wav")
    assert p.iso_at(10) == "2023-06-15T05:00:10+02:00"


def test_a_sites_table_row_matching_no_recording_is_said(tmp_path):
    sites = _sites(tmp_path, "pattern,site,lat,lon\nsiteA,A,1,2\nsiteZ,Z,1,2\n")
    places = Places.from_options(PlaceOptions(sites=sites))
    found = places.resolve(["/d/siteA/r.wav"])
    assert [r.site for r in found.unmatched_rows] == ["Z"]
    assert any(
        "sites.csv:3: pattern 'siteZ' (site 'Z') matches no recording" in m for m in found.messages(places.options)
    )


def test_a_recording_matched_by_two_rows_is_refused(tmp_path):
    sites = _sites(tmp_path, "pattern,site,lat,lon\nsiteA,A,1,2\n*.wav,W,1,2\n")
    with pytest.raises(ConfigError, match=r"r.wav is matched by line 2 \('siteA'\) and line 3 \('\*.wav'\)"):
        Places.from_options(PlaceOptions(sites=sites)).resolve(["/d/siteA/r.wav"])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("siteA,A,91,2", r"sites.csv:2: latitude 91: must be a number from -90 to 90"),
        ("siteA,A,1,-181", r"sites.csv:2: longitude -181: must be"),
        ("siteA,A,nan,2", r"sites.csv:2: latitude nan"),
        ("siteA,A,north,2", r"sites.csv:2: lat 'north', lon '2': not numbers"),
        ("siteA,A,1,2,Europe/Atlantis", r"sites.csv:2: time zone 'Europe/Atlantis' does not exist"),
        ("siteA,A,1,2,,June", r"sites.csv:2: start 'June' is not an ISO 8601"),
        ('siteA,"A\tB",1,2', r"sites.csv:2: site 'A\\tB' holds a tab, line break or other control character"),
    ],
)
def test_a_bad_row_of_a_sites_table_is_refused_naming_its_line(tmp_path, row, message):
    sites = _sites(tmp_path, f"pattern,site,lat,lon,timezone,start\n{row}\n")
    with pytest.raises(ConfigError, match=message):
        read_sites(sites)


def test_a_sites_table_without_its_columns_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"no column\(s\) \['lat', 'lon'\]"):
        read_sites(_sites(tmp_path, "pattern,site\nsiteA,A\n"))


def test_site_lat_lon_out_of_range_is_refused():
    with pytest.raises(ConfigError, match="--site: latitude 95: must be"):
        Places.from_options(PlaceOptions(site=(95.0, 0.0)))


def test_names_without_a_time_are_said_only_when_times_were_asked_for_or_others_have_one():
    quiet = Places().resolve(["/d/a.wav", "/d/b.wav"])
    assert quiet.messages(PlaceOptions()) == []
    mixed = Places().resolve(["/d/a.wav", "/d/20230615_053000.wav"])
    assert any("a.wav" in m and "no start time" in m for m in mixed.messages(PlaceOptions()))
    asked = PlaceOptions(time_pattern="%Y-%m-%d")
    assert any("no start time" in m for m in Places.from_options(asked).resolve(["/d/a.wav"]).messages(asked))


def test_options_round_trip_through_a_dict():
    opts = PlaceOptions(sites="s.csv", time_pattern="%Y%m%d", timezone="UTC")
    assert PlaceOptions.from_dict(opts.to_dict()) == opts
    assert PlaceOptions.from_dict(PlaceOptions(site=(1.0, 2.0)).to_dict()).site == (1.0, 2.0)
    assert PlaceOptions.from_dict(None) == PlaceOptions()


@pytest.mark.parametrize(
    "pattern", ["siteA", "siteA/*.wav", "*.wav", "/d/siteA/x.wav", "/d/siteA", "d/*/x.wav", "[ab]*"]
)
def test_patterns_match_as_pathlib_matches_a_path_or_a_folder_above_it(pattern):
    """The precompiled matcher agrees with PurePath.match over the recording and each folder above it."""
    from pathlib import PurePath

    from birdsed.places import SiteRow

    places = Places(rows=[SiteRow(2, pattern, "s", 0.0, 0.0)])
    for path in ["/d/siteA/x.wav", "/d/siteB/SMM1_2023.wav", "/a.wav", "/b/c/d.flac", "/d/siteA/sub/x.wav"]:
        p = PurePath(path)
        expected = any(q.match(pattern) for q in (p, *p.parents) if q.name)
        assert bool(places.rows_of(path)) == expected, (pattern, path)

"""The argparse types of cli/values.py: finite numbers in a range, whole counts, the machine's caps."""

from __future__ import annotations

import argparse

import pytest

from birdsed.cli.values import cores, cores_cap, count, lat_lon, number


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "abc", "-0.5", "1.5"])
def test_number_refuses_what_is_not_a_finite_value_in_range(text):
    with pytest.raises(argparse.ArgumentTypeError):
        number(0, 1)(text)


def test_number_takes_the_ends_unless_open():
    assert number(0, 1)("0") == 0.0 and number(0, 1)("1") == 1.0
    with pytest.raises(argparse.ArgumentTypeError, match="> 0"):
        number(0, 10, lo_open=True)("0")


@pytest.mark.parametrize("text", ["0", "-5", "1.5", "x", "99999999999999999999"])
def test_count_refuses_what_is_not_a_whole_number_in_range(text):
    with pytest.raises(argparse.ArgumentTypeError):
        count(1, 1000)(text)


def test_an_option_with_a_bad_value_exits_2_naming_it(capsys):
    p = argparse.ArgumentParser()
    p.add_argument("--hop-s", type=number(0.01, 3600))
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--hop-s", "nan"])
    assert e.value.code == 2 and "--hop-s" in capsys.readouterr().err


def test_the_cap_on_processes_follows_the_cores():
    assert cores() >= 1 and cores_cap() >= 4 * cores()


def test_lat_lon_takes_a_place_and_names_the_coordinate_out_of_range():
    parse = lat_lon()
    assert parse("43.61, 3.87") == (43.61, 3.87)
    for text, message in (
        ("91,0", "latitude 91: must be <= 90"),
        ("0,-181", "longitude -181: must be >= -180"),
        ("43", "give LAT,LON"),
        ("nan,0", "latitude 'nan': must be a finite number"),
    ):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            parse(text)


def test_a_value_starting_with_minus_and_a_digit_is_the_options_value():
    """argparse took "-33.9,151.2" and "-03:00" for options ("expected one argument"); flags are left alone."""
    from birdsed.cli import build_parser, signed_values

    parser = build_parser()
    argv = ["predict", "--model", "m", "in", "--out", "o", "--site", "-33.9,151.2", "--timezone", "-03:00"]
    assert signed_values(parser, argv)[-2:] == ["--site=-33.9,151.2", "--timezone=-03:00"]
    args = parser.parse_args(signed_values(parser, argv))
    assert (args.site, args.timezone) == ((-33.9, 151.2), "-03:00")
    assert signed_values(parser, ["predict", "--quiet", "-1.wav"]) == ["predict", "--quiet", "-1.wav"]
    abbreviated = parser.parse_args(signed_values(parser, [*argv[:-2], "--timez", "-03:00"]))
    assert (abbreviated.site, abbreviated.timezone) == ((-33.9, 151.2), "-03:00")


def test_verbose_is_taken_before_and_after_the_verb():
    """`birdsed predict ... -v` was "unrecognized arguments: -v" (only `birdsed -v predict ...` worked)."""
    from birdsed.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["predict", "--model", "m", "in", "--out", "o", "-v"]).verbose is True
    assert parser.parse_args(["-v", "predict", "--model", "m", "in", "--out", "o"]).verbose is True
    assert parser.parse_args(["predict", "--model", "m", "in", "--out", "o"]).verbose is False

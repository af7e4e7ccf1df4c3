"""Species names (model/names.py) and BirdNET's place-and-season model (model/birdnet_range.py): names to code,
common and scientific; species lists that fold one species' names and suggest close ones; occurrence, the species
list of a place and week, the prior. Tests that run the metadata model skip without the birdnet extra."""

import json

import numpy as np
import pytest
from conftest import needs_birdnet, write_audio  # noqa: F401 - conftest on the path

from birdsed.cli import main
from birdsed.errors import ConfigError
from birdsed.model import birdnet_range
from birdsed.model.birdnet_labels import map_classes
from birdsed.model.birdnet_range import Place, filter_scores, soft_prior, week_of
from birdsed.model.names import Names, read_species_list, resolve_names, synonym_note, synonyms


def run_cli(capsys, *argv) -> tuple[int, str]:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse refusals
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_any_name_gives_code_common_and_scientific():
    names = Names.default()
    wood_thrush = names.lookup("woothr")
    assert (wood_thrush.code, wood_thrush.common, wood_thrush.scientific) == (
        "woothr",
        "Wood Thrush",
        "Hylocichla mustelina",
    )
    for other in ("Hylocichla mustelina", "wood thrush", "Wood-Thrush", "Hylocichla mustelina_Wood Thrush"):
        assert names.lookup(other) == wood_thrush
    assert names.lookup("Wood Thursh") is None
    assert names.describe("my_own_code").code == "my_own_code"


def test_a_data_sets_own_codes_answer_to_their_species():
    names = Names.default().with_aliases({"Turmer_song": ["Turdus merula"], "Cicada_1": ["Cicadidae sp"]})
    assert names.lookup("Turmer_song").code == "eurbla"
    assert names.lookup("Cicada_1").scientific == "Cicadidae sp"


def test_a_typo_gets_the_closest_names_suggested(tmp_path, caplog):
    f = tmp_path / "species.txt"
    f.write_text("Wood Thursh\neurbla\n")
    found = read_species_list(f)
    assert found.classes == ["Wood Thursh", "eurbla"]
    assert found.unknown["Wood Thursh"][0] == "Wood Thrush" and "woothr" not in found.unknown["Wood Thursh"]
    assert "did you mean 'Wood Thrush'" in caplog.text
    # a group name gets species of that group, not eBird codes it is a few letters from ('trokin' for Robin)
    robins = Names.default().suggest("Robin")
    assert len(robins) == 3 and all(r.endswith(" Robin") for r in robins), robins
    tits = Names.default().suggest("Gret Tit")
    assert tits[0] == "Great Tit" and "gretit4" not in tits
    assert "eurbla" in Names.default().suggest("eurbl")  # written as a code: codes suggested


def test_two_names_of_one_species_become_one_class_said_once(caplog):
    found = resolve_names(["woothr", "Hylocichla mustelina", "eurbla", "woothr", "Wood Thrush"])
    assert found.classes == ["woothr", "eurbla"]
    messages = found.messages("list.txt")
    assert len([m for m in messages if "'Hylocichla mustelina' and 'woothr' are one species" in m]) == 1
    assert any("'woothr' is listed twice" in m for m in messages)


def test_places_and_weeks_out_of_range_are_refused():
    for lat, lon, week, what in [(91, 0, -1, "latitude 91"), (0, -181, -1, "longitude -181"), (0, 0, 0, "week 0")]:
        with pytest.raises(ConfigError, match=what):
            Place(lat, lon, week)
    with pytest.raises(ConfigError, match="latitude nan"):
        Place(float("nan"), 0)
    assert Place(-90, 180, 48).week == 48 and week_of(1, 1) == 1 and week_of(12, 31) == 48 and week_of(6, 8) == 22


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lat", "95", "--lon", "3"], "argument --lat: 95: must be <= 90"),
        (["--lat", "43", "--lon", "-200"], "argument --lon: -200: must be >= -180"),
        (["--lat", "43", "--lon", "3", "--week", "49"], "argument --week: 49: must be 1 to 48 or -1"),
        (["--lat", "43", "--lon", "3", "--week", "0"], "argument --week: 0: must be 1 to 48 or -1"),
        (["--lat", "nan", "--lon", "3"], "argument --lat: 'nan': must be a finite number"),
    ],
)
def test_birdnet_species_refuses_a_bad_place_naming_it(capsys, argv, message):
    rc, text = run_cli(capsys, "birdnet", "species", *argv)
    assert rc == 2 and message in text


def test_birdnet_init_needs_lat_and_lon_together(tmp_path, capsys):
    rc, text = run_cli(capsys, "birdnet", "init", "--out", tmp_path / "m", "--lat", "43")
    assert rc == 2 and "give --lat and --lon together" in text and not (tmp_path / "m").exists()


def test_the_soft_prior_down_weights_never_drops():
    scores = np.array([[0.9, 0.9, 0.9, 0.2]], np.float32)
    occ = np.array([1.0, 0.1, 0.0, np.nan], np.float32)
    soft = soft_prior(scores, occ, weight=0.5, floor=1e-3)
    assert soft[0, 0] == pytest.approx(0.9, abs=1e-5)  # occurrence 1: unchanged
    logit = np.log(0.9 / 0.1)
    assert soft[0, 1] == pytest.approx(1 / (1 + np.exp(-(logit + 0.5 * np.log(0.1)))), abs=1e-5)
    assert 0 < soft[0, 2] < soft[0, 1]  # occurrence 0: floored, down-weighted, not 0
    assert soft[0, 3] == pytest.approx(0.2, abs=1e-5)  # no BirdNET label: left alone
    hard = filter_scores(scores, occ, 0.03)
    assert hard.tolist() == [[pytest.approx(0.9), pytest.approx(0.9), 0.0, pytest.approx(0.2)]]


@needs_birdnet
def test_occurrence_matches_any_name_and_nan_for_unknown():
    occ = birdnet_range.occurrence(["eurbla", "Turdus merula_Eurasian Blackbird", "Cicada"], 43.6, 3.9, 20)
    assert occ[0] == occ[1] and occ[0] > 0.5 and np.isnan(occ[2])
    # a North American species is not expected in southern France in May
    assert birdnet_range.occurrence(["woothr"], 43.6, 3.9, 20)[0] < 0.03


@needs_birdnet
def test_birdnet_species_prints_and_writes_the_list(tmp_path, capsys):
    rc, text = run_cli(
        capsys, "birdnet", "species", "--lat", 43.6, "--lon", 3.9, "--week", 20, "--out", tmp_path / "s.txt"
    )
    assert rc == 0 and "Eurasian Blackbird" in text and "eurbla" in text
    listed = (tmp_path / "s.txt").read_text().splitlines()
    assert "Turdus merula_Eurasian Blackbird" in listed and "Hylocichla mustelina_Wood Thrush" not in listed
    rc, _ = run_cli(capsys, "birdnet", "species", "--lat", 43.6, "--lon", 3.9, "--out", tmp_path / "s.csv")
    table = (tmp_path / "s.csv").read_text().splitlines()
    assert rc == 0 and table[0] == "code,common,scientific,label,occurrence" and len(table) > len(listed)  # all year


@needs_birdnet
def test_birdnet_init_from_a_place_and_from_a_list_with_two_names_of_one_species(tmp_path, capsys, caplog):
    rc, text = run_cli(capsys, "birdnet", "init", "--out", tmp_path / "m", "--lat", 43.6, "--lon", 3.9, "--week", 20)
    classes = json.loads((tmp_path / "m" / "model.json").read_text())["classes"]
    assert rc == 0 and "Turdus merula_Eurasian Blackbird" in classes and len(classes) < 1000
    f = tmp_path / "species.txt"
    f.write_text("eurbla\nTurdus merula\nWood Thursh\n")
    rc, text = run_cli(capsys, "birdnet", "init", "--out", tmp_path / "m2", "--species", f)
    classes = json.loads((tmp_path / "m2" / "model.json").read_text())["classes"]
    assert rc == 0 and classes == ["eurbla", "Wood Thursh"]
    said = caplog.text + text
    assert said.count("are one species") == 1 and said.count("did you mean 'Wood Thrush'") == 1
    assert "1 class(es) have no BirdNET label and score 0: Wood Thursh" in text


def test_former_scientific_names_find_birdnets_newer_genera():
    names = Names.default()
    assert names.lookup("Sylvia melanocephala").label == "Curruca melanocephala_Sardinian Warbler"
    assert names.lookup("parus caeruleus").common == "Eurasian Blue Tit"
    assert names.lookup("Sylvia cantillans").scientific == "Curruca iberiae"  # the split's one BirdNET V2.4 knows
    assert names.lookup("Sylvia atricapilla").scientific == "Sylvia atricapilla"  # still a Sylvia: its own name


def test_a_former_name_that_covered_a_split_species_is_taken_and_said(tmp_path, caplog):
    f = tmp_path / "species.txt"
    f.write_text("Sylvia cantillans\nSylvia melanocephala\n")
    said = read_species_list(f).messages("species.txt")
    assert len(said) == 1 and "'Sylvia cantillans' is taken as Curruca iberiae (Western Subalpine Warbler)" in said[0]
    assert "the eastern Curruca cantillans" in said[0]
    labels = ["Curruca iberiae_Western Subalpine Warbler", "Curruca melanocephala_Sardinian Warbler"]
    aliases = {
        "Sylcan_call": ["Sylvia cantillans"],
        "Sylcan_song": ["Sylvia cantillans"],
        "Sylmel": ["Sylvia melanocephala"],
    }
    with caplog.at_level("WARNING"):
        cmap = map_classes(list(aliases), labels, {}, aliases=aliases)
    assert cmap.indices == [0, 0, 1]
    warned = [r.getMessage() for r in caplog.records if r.name == "birdsed.model.birdnet_labels"]
    assert len(warned) == 1 and warned[0].startswith("Sylcan_call, Sylcan_song: 'Sylvia cantillans' is taken as")
    assert synonym_note("Sylvia melanocephala") == "" and "Iduna opaca" in synonym_note("hippolais pallida")


def test_every_synonym_names_a_species_birdnet_knows_and_none_shadows_one():
    scientific = {s.scientific for s in Names.default().species}
    table = synonyms()
    assert len(table) > 50
    assert set(table.values()) <= scientific
    assert not set(table) & scientific  # a former name that is still some species' own name would take it over


def test_a_data_sets_former_names_map_its_classes_to_birdnet_labels():
    labels = ["Curruca melanocephala_Sardinian Warbler", "Sylvia atricapilla_Eurasian Blackcap"]
    cmap = map_classes(
        ["Sylmel_song", "Sylatr_song"],
        labels,
        {},
        aliases={
            "Sylmel_song": ["Sylvia melanocephala", "Mediterranean Warbler"],
            "Sylatr_song": ["Sylvia atricapilla"],
        },
    )
    assert cmap.indices == [0, 1] and cmap.via[0] == "Sylvia melanocephala"
    # a label that carries the former name itself keeps it
    cmap = map_classes(
        ["Sylmel_song"],
        ["Sylvia melanocephala_Old Name", *labels],
        {},
        aliases={"Sylmel_song": ["Sylvia melanocephala"]},
    )
    assert cmap.indices == [0]


def test_a_trained_models_aliases_name_its_classes():
    """model.json's `aliases` (train keeps a data set's species.csv there) name the classes their own names do not;
    a malformed entry costs only the names."""
    from birdsed.model.names import class_names, own_species

    meta = {
        "aliases": {"Butbut_call": ["Buteo buteo", "Common Buzzard"], "Cicorn_song": ["Cicada orni", "Grey Cicada"]}
    }
    names = class_names(["Butbut_call", "Cicorn_song", "Mycall_1", "woothr"], meta, shown="common")
    assert names.of("Butbut_call").scientific == "Buteo buteo" and names.show("Butbut_call") == "Common Buzzard"
    assert names.of("Cicorn_song") == own_species("Cicorn_song", ["Cicada orni", "Grey Cicada"])
    assert names.show("Cicorn_song") == "Grey Cicada" and names.show("Mycall_1") == "Mycall_1"
    assert names.show("woothr") == "Wood Thrush"
    assert own_species("X_1", ["Grey Cicada", "grecic1"]) == own_species("X_1", ["Grey Cicada"])  # no scientific
    assert own_species("X_1", ["Grey Cicada"]).scientific == "" and own_species("X_1", []).common == ""
    assert class_names(["Butbut_call"], {"aliases": ["Buteo buteo"]}).of("Butbut_call").common == ""

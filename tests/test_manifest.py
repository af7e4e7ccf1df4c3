import logging

import pytest
from conftest import write_audio

from birdsed.data.manifest import detect_format, read_dataset
from birdsed.errors import ManifestError
from birdsed.kaggle.cornell import read_kaggle_test, read_truth

CORNELL_HEADER = "ebird_code,filename,species,sci_name,secondary_labels,duration,rating\n"


def _cornell(tmp_path, rows):
    (tmp_path / "train.csv").write_text(CORNELL_HEADER + "".join(rows))
    for r in rows:
        code, fn = r.split(",")[:2]
        write_audio(tmp_path / "train_audio" / code / fn)
    return tmp_path


def test_cornell_maps_secondary_names_and_warns_on_unmapped(tmp_path, caplog):
    root = _cornell(
        tmp_path,
        [
            "amecro,a.mp3,American Crow,Corvus brachyrhynchos,"
            "\"['Red-winged Blackbird (Agelaius phoeniceus)', 'Nowhere Bird (Avis nulla)']\",12,4.5\n",
            "rewbla,b.wav,Red-winged Blackbird,Agelaius phoeniceus,[],30,3\n",
        ],
    )
    with caplog.at_level(logging.WARNING):
        m = read_dataset(root)
    assert m.source == "cornell"
    t = m.table
    assert t.loc[0, "recording_id"] == "amecro/a.mp3"
    assert t.loc[0, "primary_labels"] == ["amecro"] and t.loc[0, "secondary_labels"] == ["rewbla"]
    assert t.loc[0, "duration_s"] == 12 and t.loc[1, "rating"] == 3
    assert m.unmapped_secondary == {"Nowhere Bird (Avis nulla)": 1}
    assert "1 secondary label(s)" in caplog.text and "map to no ebird code" in caplog.text
    assert m.classes == ["amecro", "rewbla"]
    assert "species" in t.columns  # source columns kept


def test_cornell_bad_literal_names_line_and_column(tmp_path):
    root = _cornell(tmp_path, ['amecro,a.wav,American Crow,Corvus b,"[\'unclosed",1,1\n'])
    with pytest.raises(ManifestError, match=r"line 2, column 'secondary_labels'"):
        read_dataset(root)


def test_malformed_csv_names_file_and_line(tmp_path):
    (tmp_path / "labels.csv").write_text("filename,labels\na.wav,x\nb.wav,y,z,extra\n")
    with pytest.raises(ManifestError, match=r"labels.csv.*line 3"):
        read_dataset(tmp_path)


def test_missing_column_is_named(tmp_path):
    (tmp_path / "labels.csv").write_text("file,labels\na.wav,x\n")
    with pytest.raises(ManifestError, match="missing column.*filename"):
        read_dataset(tmp_path)


def test_bad_number_names_line_and_column(tmp_path):
    _cornell(tmp_path, ["amecro,a.wav,American Crow,Corvus b,[],long,4\n"])
    with pytest.raises(ManifestError, match=r"line 2, column 'duration'"):
        read_dataset(tmp_path)


def test_labels_csv_keeps_negatives_and_reports_missing_audio(tmp_path, caplog):
    (tmp_path / "labels.csv").write_text("filename,labels,secondary_labels\na.wav,x y,z\nb.wav,,\nc.wav,x,\n")
    write_audio(tmp_path / "audio" / "a.wav")
    write_audio(tmp_path / "audio" / "b.wav")
    with caplog.at_level(logging.WARNING):
        m = read_dataset(tmp_path, "labels")
    assert list(m.table["primary_labels"]) == [["x", "y"], []]
    assert m.table.loc[0, "secondary_labels"] == ["z"]
    assert m.missing == ["c.wav"] and "do not exist" in caplog.text
    assert "comma" not in caplog.text
    (tmp_path / "labels.csv").write_text('filename,labels\na.wav,"x,y"\nb.wav,z\n')
    m = read_dataset(tmp_path, "labels")  # a list written with commas: one class as written, and said
    assert m.classes == ["x,y", "z"] and "1 label(s) hold a comma, e.g. 'x,y'" in caplog.text


def test_birdclef(tmp_path):
    (tmp_path / "train_metadata.csv").write_text(
        "primary_label,secondary_labels,filename\nbkcchi,\"['amerob']\",bkcchi/XC1.ogg\namerob,[],amerob/XC2.ogg\n"
    )
    write_audio(tmp_path / "train_audio" / "bkcchi" / "XC1.ogg")
    write_audio(tmp_path / "train_audio" / "amerob" / "XC2.ogg")
    m = read_dataset(tmp_path)
    assert m.source == "birdclef"
    assert m.table.loc[0, "secondary_labels"] == ["amerob"] and m.classes == ["amerob", "bkcchi"]


def test_auto_detect_and_unknown_layout(tmp_path):
    with pytest.raises(ManifestError, match="no known data-set layout"):
        detect_format(tmp_path)
    with pytest.raises(ManifestError, match="not found"):
        read_dataset(tmp_path / "nope")


def test_kaggle_test_csv(tmp_path):
    (tmp_path / "test.csv").write_text("site,row_id,seconds,audio_id\nsite_1,site_1_ab_5,5,ab\nsite_3,site_3_cd,,cd\n")
    write_audio(tmp_path / "test_audio" / "ab.mp3", format="MP3")
    df = read_kaggle_test(tmp_path / "test.csv")
    assert df.loc[0, "seconds"] == 5 and df["seconds"].isna().iloc[1]
    assert df.loc[0, "path"].endswith("ab.mp3") and df.loc[1, "path"] == ""


def test_read_truth(tmp_path):
    (tmp_path / "t.csv").write_text("row_id,birds\na,nocall\nb,x y\n")
    assert read_truth(tmp_path / "t.csv") == {"a": set(), "b": {"x", "y"}}


def test_nips4b_through_reader_and_store(nips4b, tmp_path):
    from birdsed.audio.decode import load_audio
    from birdsed.data.store import AudioStore, prepare

    m = read_dataset(nips4b)
    assert m.source == "labels" and len(m) == 550
    assert sum(len(x) == 0 for x in m.table["primary_labels"]) == 61
    assert len(m.classes) == 87
    sub = m.subset(m.table.index < 40)
    result = prepare(sub, tmp_path / "store", workers=2, quiet=True)
    assert result.n_prepared == 40 and result.n_skipped == 0
    store = AudioStore(tmp_path / "store")
    rid = sub.table.loc[3, "recording_id"]
    full = load_audio(sub.table.loc[3, "path"])
    crop = store.read(rid, 0.5, 1.0)
    assert abs(crop - full[16000:48000]).max() < 1.5 / 32767

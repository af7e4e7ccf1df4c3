import filecmp

import pandas as pd

from birdsed.data.manifest import read_dataset
from birdsed.data.synth import SynthConfig, row_truth, synthesize
from birdsed.kaggle.cornell import read_kaggle_test


def _tree_equal(a, b) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(_tree_equal(a / d, b / d) for d in cmp.common_dirs)


def test_layout_and_labels(synth_data):
    m = read_dataset(synth_data)
    assert m.source == "cornell" and len(m) == 12 and len(m.classes) == 3
    assert {p.rsplit(".", 1)[1] for p in m.table["path"]} >= {"wav", "flac", "ogg", "mp3"}
    assert sum(len(s) > 0 for s in m.table["secondary_labels"]) >= 1
    test = read_kaggle_test(synth_data / "test.csv")
    assert (test["path"] != "").all()
    assert set(test["site"]) == {"site_1", "site_3"}
    site1 = test[test.site == "site_1"]
    assert list(site1["seconds"]) == [5.0 * (i + 1) for i in range(6)]
    truth = pd.read_csv(synth_data / "test_labels.csv", keep_default_na=False)
    assert list(truth["row_id"]) == list(test["row_id"])
    assert (truth["birds"] == "nocall").any() and (truth["birds"] != "nocall").any()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    cfg = SynthConfig(species=2, clips_per_species=6, soundscapes=1, soundscape_s=20, max_clip_s=5, seed=3)
    a = synthesize(tmp_path / "a", cfg, quiet=True)
    b = synthesize(tmp_path / "b", cfg, quiet=True)
    assert _tree_equal(a, b)
    c = synthesize(tmp_path / "c", SynthConfig(**{**cfg.__dict__, "seed": 4}), quiet=True)
    assert not _tree_equal(a, c)


def test_row_truth_overlap_rule():
    events = [("a", 4.98, 5.5), ("b", 1.0, 1.2), ("c", 9.99, 10.01)]
    assert row_truth(events, 12.0) == [["b"], ["a"], []]
    trill = [("t", 10.5 + 0.07 * i, 10.5 + 0.07 * i + 0.04) for i in range(3)]  # 40 ms notes, 120 ms together
    assert row_truth(trill, 15.0) == [[], [], ["t"]]

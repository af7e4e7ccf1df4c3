import numpy as np
import pandas as pd
import pytest
import torch

from birdsed.config import AugmentConfig, DataConfig, FrontendConfig
from birdsed.data.dataset import fit_length
from birdsed.data.manifest import Manifest
from birdsed.data.sampling import build_items, split_counts, stratified_split, targets
from birdsed.train.augment import Augmenter, mixup


def _manifest(groups: dict[str, list[float]], secondary: dict[int, list[str]] | None = None) -> Manifest:
    rows = []
    for g, durs in groups.items():
        for i, d in enumerate(durs):
            rows.append(
                {
                    "recording_id": f"{g}/{i}",
                    "path": "",
                    "primary_labels": [g] if g != "none" else [],
                    "secondary_labels": [],
                    "duration_s": d,
                    "rating": np.nan,
                }
            )
    t = pd.DataFrame(rows)
    for i, s in (secondary or {}).items():
        t.at[i, "secondary_labels"] = s
    return Manifest(t, root=__import__("pathlib").Path("."), source="test")


def test_downsampling_keeps_the_shortest():
    m = _manifest({"a": list(range(10, 110)), "b": [20.0] * 5})
    cfg = DataConfig(balance_max=80, balance_min=1)
    items = build_items(m, cfg, seed=0)
    a_ids = {it.recording_id for it in items if it.recording_id.startswith("a/")}
    assert len(a_ids) == 80 and "a/0" in a_ids and "a/99" not in a_ids  # the 20 longest dropped


def test_upsampling_splits_long_recordings_into_distinct_ranges():
    m = _manifest({"a": [60.0, 12.0, 4.0]})
    items = [it for it in build_items(m, DataConfig(balance_min=10, balance_max=80, crop_s=5.0), seed=0)]
    assert len(items) == 10
    by_rec: dict[str, list] = {}
    for it in items:
        by_rec.setdefault(it.recording_id, []).append((it.start_s, it.end_s))
    assert len(by_rec["a/2"]) == 1  # too short to split
    for spans in by_rec.values():
        spans.sort()
        assert all(b - a >= 5.0 - 1e-9 or len(spans) == 1 for a, b in spans)
        assert all(spans[i][1] <= spans[i + 1][0] + 1e-9 for i in range(len(spans) - 1))  # disjoint


def test_split_counts_respects_crop_length():
    assert split_counts(np.array([10.0, 3.0]), 10, 5.0).tolist() == [2, 1]


def test_balance_off_and_seeded_order():
    m = _manifest({"a": [10.0] * 100, "b": [10.0] * 3})
    assert len(build_items(m, DataConfig(balance=False), seed=0)) == 103
    assert build_items(m, DataConfig(), seed=1) == build_items(m, DataConfig(), seed=1)
    assert build_items(m, DataConfig(), seed=1) != build_items(m, DataConfig(), seed=2)


def test_secondary_label_rule():
    m = _manifest({"a": [30.0, 50.0]}, secondary={0: ["b"], 1: ["b"]})
    t = targets(m, ["a", "b"], DataConfig(secondary_max_s=40.0, secondary_weight=0.3))
    assert t["a/0"].tolist() == pytest.approx([1.0, 0.3])
    assert t["a/1"].tolist() == [1.0, 0.0]  # longer than 40 s: secondary ignored
    off = targets(m, ["a", "b"], DataConfig(secondary_weight=0.0))
    assert off["a/0"].tolist() == [1.0, 0.0]


def test_stratified_split_is_disjoint_stratified_and_seeded():
    m = _manifest({"a": [10.0] * 20, "b": [10.0] * 10, "c": [10.0]})
    tr, va = stratified_split(m, 0.2, seed=0)
    assert not (tr & va).any() and (tr | va).all()
    groups = [p[0] for p in m.table["primary_labels"]]
    assert sum(v for v, g in zip(va, groups) if g == "a") == 4 and sum(v for v, g in zip(va, groups) if g == "b") == 2
    assert not any(v for v, g in zip(va, groups) if g == "c")
    assert (stratified_split(m, 0.2, seed=0)[1] == va).all() and not (stratified_split(m, 0.2, seed=1)[1] == va).all()


def test_fit_length_loop_and_pad():
    x = np.arange(3, dtype=np.float32)
    assert fit_length(x, 7, "loop").tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert fit_length(x, 5, "pad").tolist() == [0, 1, 2, 0, 0]
    assert fit_length(np.arange(10, dtype=np.float32), 4, "pad").tolist() == [0, 1, 2, 3]


ALL_ON = AugmentConfig(
    negatives_p=1.0, gain_p=1.0, noise_p=1.0, lowpass_p=1.0, pitch_p=1.0, tempo_p=1.0, specaug_p=1.0, mixup_p=1.0
)


def test_augmentations_are_identity_in_eval_mode():
    aug = Augmenter(ALL_ON, FrontendConfig(n_mels=32)).eval()
    x, y = torch.randn(3, 16000), torch.eye(3)
    x2, y2 = aug.negatives(x, y)
    assert torch.equal(x2, x) and torch.equal(y2, y)
    assert torch.equal(aug.wave(x), x)
    d = torch.randn(3, 32, 50)
    assert torch.equal(aug.db(d), d)
    m = torch.randn(3, 1, 32, 50)
    assert torch.equal(aug.spec(m), m)


def test_augmentations_change_things_in_training():
    torch.manual_seed(0)
    aug = Augmenter(ALL_ON, FrontendConfig(n_mels=32)).train()
    x, y = torch.randn(3, 16000), torch.eye(3)
    x2, y2 = aug.negatives(x, y)
    assert not torch.equal(x2, x) and y2.sum() == 0
    assert not torch.equal(aug.wave(x), x)
    m = torch.randn(3, 1, 32, 50)
    assert not torch.equal(aug.spec(m), m) and aug.spec(m).shape == m.shape


def test_pitch_shift_moves_energy_up_in_mel():
    cfg = AugmentConfig(pitch_p=1.0, pitch_semitones=12.0, tempo_p=0.0, specaug_p=0.0)
    aug = Augmenter(cfg, FrontendConfig(n_mels=64)).train()
    m = torch.zeros(64, 1, 64, 10)
    m[:, :, 20, :] = 1.0
    torch.manual_seed(1)
    out = aug.spec(m)
    peaks = out[:, 0, :, 5].argmax(dim=1)
    assert (peaks != 20).any()  # shifted by a random amount in [-12, 12] semitones


def test_mixup_union_and_weighted():
    torch.manual_seed(0)
    m, y = torch.randn(4, 1, 8, 8), torch.eye(4)
    _, yu, _ = mixup(m, y, AugmentConfig(mixup_p=1.0, mixup_union=True))
    assert set(yu.sum(1).tolist()) <= {1.0, 2.0} and yu.max() == 1.0
    _, yw, _ = mixup(m, y, AugmentConfig(mixup_p=1.0))
    torch.testing.assert_close(yw.sum(1), torch.ones(4))
    m0, y0, _ = mixup(m, y, AugmentConfig(mixup_p=0.0))
    assert torch.equal(m0, m) and torch.equal(y0, y)


def test_iterative_stratified_folds():
    from birdsed.data.sampling import iterative_stratified_folds

    rng = np.random.default_rng(0)
    classes = [f"c{i}" for i in range(12)]
    labels = [list(rng.choice(classes, size=rng.integers(0, 4), replace=False)) for _ in range(300)]
    folds = iterative_stratified_folds(labels, 5, seed=3)
    assert set(folds) == {0, 1, 2, 3, 4}  # every example in exactly one fold
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 3
    for c in classes:
        per_fold = np.bincount([f for f, ls in zip(folds, labels) if c in ls], minlength=5)
        assert per_fold.max() - per_fold.min() <= 2, (c, per_fold)  # stratified per label
    assert (iterative_stratified_folds(labels, 5, seed=3) == folds).all()
    assert not (iterative_stratified_folds(labels, 5, seed=4) == folds).all()

"""Head warm-up (LP-FT) on a tiny store made in tmp_path."""

import pandas as pd
import pytest
import torch
from conftest import write_audio

from birdsed.config import AugmentConfig, DataConfig, FrontendConfig, ModelConfig
from birdsed.data.dataset import WindowDataset
from birdsed.data.manifest import read_dataset
from birdsed.data.sampling import targets
from birdsed.data.store import AudioStore, prepare
from birdsed.model.sed import SEDModel
from birdsed.train.augment import Augmenter, augmented_mel
from birdsed.train.head_warmup import frozen_features, warm_up_head


def _store(tmp_path):
    rows = []
    for i in range(8):
        name = f"c{i}.wav"
        cls = "low" if i % 2 else "high"
        freq = 600.0 if cls == "low" else 6000.0
        write_audio(tmp_path / "data" / name, seconds=1.5, freq_hz=freq + 50 * i)
        rows.append({"filename": name, "labels": cls})
    pd.DataFrame(rows).to_csv(tmp_path / "data" / "labels.csv", index=False)
    manifest = read_dataset(tmp_path / "data")
    prepare(manifest, tmp_path / "store", workers=1, quiet=True)
    return AudioStore(tmp_path / "store")


def test_warm_up_fits_the_head_and_front_end_statistics_only(tmp_path):
    store = _store(tmp_path)
    m = store.manifest()
    classes = ["high", "low"]
    tgt = targets(m, classes, DataConfig())
    ds = WindowDataset(store, list(m.table["recording_id"]), tgt, 2.0, 1, "pad")
    torch.manual_seed(0)
    model = SEDModel(FrontendConfig(n_mels=32), ModelConfig(backbone="resnet10t", dropout=0.0), classes)
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    wave = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.stack([ds[i][1] for i in range(len(ds))])

    loss = warm_up_head(model, ds, epochs=60, lr=3e-3, batch_size=4)

    assert loss < 0.2  # two tones are easy to separate on frozen random features
    for k, v in model.backbone.state_dict().items():
        if "running_" not in k and "num_batches" not in k:
            assert torch.equal(v, backbone_before[k]), k  # weights frozen; only BatchNorm statistics are refitted
    assert any(
        not torch.equal(v, backbone_before[k]) for k, v in model.backbone.state_dict().items() if "running_mean" in k
    )
    assert any(not torch.equal(v, head_before[k]) for k, v in model.head.state_dict().items())
    db = model.frontend.power_db(wave)
    assert torch.allclose(model.frontend.norm.running_mean, db.mean(dim=(0, 2)), atol=1e-3)
    assert model.training
    model.eval()
    with torch.no_grad():
        clip = model(wave)["clipwise"]
    assert (clip.argmax(1) == y.argmax(1)).all()


def test_augmented_views_enlarge_the_warm_up_cache(tmp_path):
    """views=3: the plain windows, then two augmented passes (gain + mixup with the union of labels)."""
    store = _store(tmp_path)
    m = store.manifest()
    classes = ["high", "low"]
    ds = WindowDataset(store, list(m.table["recording_id"]), targets(m, classes, DataConfig()), 2.0, 1, "pad")
    torch.manual_seed(0)
    fcfg = FrontendConfig(n_mels=32)
    model = SEDModel(fcfg, ModelConfig(backbone="resnet10t", dropout=0.0), classes)
    acfg = AugmentConfig(
        gain_p=1.0, gain_db=12.0, mixup_p=1.0, mixup_union=True, specaug_p=0.0, pitch_p=0.0, tempo_p=0.0
    )
    aug = Augmenter(acfg, fcfg).train()
    plain, y1 = frozen_features(model, ds, 4, torch.device("cpu"), recalibrate_bn=False)
    feats, y3 = frozen_features(
        model,
        ds,
        4,
        torch.device("cpu"),
        recalibrate_bn=False,
        views=3,
        augment=lambda w, y: augmented_mel(aug, model.frontend, w, y, acfg)[:2],
    )
    n = len(ds)
    assert feats.shape == (3 * n, *plain.shape[1:]) and y3.shape == (3 * n, 2)
    torch.testing.assert_close(feats[:n], plain)
    torch.testing.assert_close(y3[:n], y1)
    assert not torch.allclose(feats[n : 2 * n], plain)  # the augmented copies differ from the plain windows
    assert (y3[n:].sum(1) >= 1).all() and (y3[n:].sum(1) == 2).any()  # mixup's union: some views hold both classes
    with pytest.raises(ValueError, match="augment"):
        frozen_features(model, ds, 4, torch.device("cpu"), recalibrate_bn=False, views=2)

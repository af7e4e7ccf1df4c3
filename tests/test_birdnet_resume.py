"""`train --resume` on cached BirdNET features (embedtrain.py): the frozen head (the birdnet preset) and BirdNET's
last layers on a cached trunk (train.backbone_cache) continue a killed run from RUN/checkpoints/last.pt and end with
the uninterrupted run's weights; a resume with other data is refused by name before anything is loaded; a fresh run
into the folder never leaves an earlier run's checkpoint for --resume to take. Tests that run BirdNET skip without
the optional extra (birdsed[birdnet])."""

import pandas as pd
import pytest
import torch
from conftest import needs_birdnet
from safetensors.torch import load_file

from birdsed.config import apply_overrides, load_config
from birdsed.errors import ConfigError
from birdsed.train.checkpoint import EPOCH_CHECKPOINT, read_epoch_checkpoint

FROZEN = ["train.epochs=3", "train.batch_size=4", "augment.mixup_p=1.0"]
TAIL = [
    *FROZEN,
    "model.freeze_backbone=false",
    "train.backbone_cache=true",
    "train.backbone_train_from=0.9",
    "augment.specaug_cut=true",
]
# a weight average, validation (the best epoch is kept): both must come back from the checkpoint too
EMA = ["train.ema=true", "train.ema_decay=0.5"]
VALIDATED = ["data.val_fraction=0.34"]


def config(base: list[str], cache, *more: str):
    return apply_overrides(load_config("birdnet"), [*base, f"data.embedding_cache={cache}", *more])


def weights(model_dir) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "weights.safetensors"))


@needs_birdnet
@pytest.mark.parametrize(
    "base, more",
    [
        (FROZEN, EMA),
        (FROZEN, VALIDATED),
        pytest.param(TAIL, [], marks=pytest.mark.slow),
        pytest.param(TAIL, [*VALIDATED, *EMA], marks=pytest.mark.slow),
        (TAIL, ["train.head_warmup_epochs=1", "train.epochs=2"]),  # killed in the head's warm-up, resumed past it
    ],
    ids=[
        "frozen-head-ema",
        "frozen-head-validated",
        "cached-tail",
        "cached-tail-validated-ema",
        "cached-tail-head-first",
    ],
)
def test_a_run_killed_after_an_epoch_resumes_to_the_uninterrupted_runs_weights(
    synth_data, tmp_path, monkeypatch, base, more
):
    from birdsed.train import embedtrain
    from birdsed.train.run import train

    cfg = config(base, tmp_path / "cache", *more)
    whole = train(synth_data, cfg, tmp_path / "whole", quiet=True)
    written = embedtrain.write_epoch_checkpoint

    def killed_after_first_epoch(path, state):
        written(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(embedtrain, "write_epoch_checkpoint", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(synth_data, cfg, tmp_path / "killed", quiet=True)
    monkeypatch.setattr(embedtrain, "write_epoch_checkpoint", written)
    kept = read_epoch_checkpoint(tmp_path / "killed" / EPOCH_CHECKPOINT)
    assert kept["epoch"] == 0 and ("best" in kept) == (VALIDATED[0] in more)
    resumed = train(synth_data, cfg, tmp_path / "killed", resume=True, quiet=True)
    a, b = weights(whole), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # metrics.csv: every epoch once, as the uninterrupted run's
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "killed" / "metrics.csv"), pd.read_csv(tmp_path / "whole" / "metrics.csv")
    )


@needs_birdnet
def test_a_resume_is_refused_with_other_data_and_a_fresh_run_drops_the_folders_checkpoint(synth_data, tmp_path):
    from birdsed.train.run import train

    run = tmp_path / "run"
    cfg = config(FROZEN, tmp_path / "cache", "train.epochs=1")
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(synth_data, cfg, run, resume=True, quiet=True)
    assert not run.exists()
    train(synth_data, cfg, run, quiet=True)
    ckpt = read_epoch_checkpoint(run / EPOCH_CHECKPOINT)
    assert ckpt["classes"] == sorted(ckpt["classes"]) and len(ckpt["classes"]) == 3
    # the same data set with one species left out: named, before a weight is loaded
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for f in synth_data.iterdir():
        (fewer / f.name).symlink_to(f)
    (fewer / "train.csv").unlink()
    table = pd.read_csv(synth_data / "train.csv")
    gone = ckpt["classes"][0]
    table[table["ebird_code"] != gone].to_csv(fewer / "train.csv", index=False)
    with pytest.raises(ConfigError, match=rf"trained on 3 classes, the data given has 2 \(not in the data: {gone}\)"):
        train(fewer, config(FROZEN, tmp_path / "cache", "train.epochs=2"), run, resume=True, quiet=True)
    # a fresh run into the folder removes the earlier run's checkpoint as it starts: killed before its first epoch
    # ended, --resume finds nothing to continue instead of the other run's weights
    from birdsed.train import embedtrain

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    mp = pytest.MonkeyPatch()
    mp.setattr(embedtrain, "train_embedding_head", killed)
    try:
        with pytest.raises(KeyboardInterrupt):
            train(fewer, config(FROZEN, tmp_path / "cache"), run, quiet=True)
    finally:
        mp.undo()
    assert not (run / EPOCH_CHECKPOINT).exists()
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(fewer, config(FROZEN, tmp_path / "cache"), run, resume=True, quiet=True)


@needs_birdnet
def test_head_warmup_epochs_train_the_head_alone_then_birdnets_layers_too(synth_data, tmp_path, monkeypatch, port):
    """train.head_warmup_epochs with BirdNET's layers training (LP-FT): the first epochs move the head only; the
    epochs after them move BirdNET's layers too, on the schedule of train.epochs (max_steps counts those alone)."""
    from birdsed.train import embedtrain
    from birdsed.train.run import train

    cfg = config(TAIL, tmp_path / "cache", "train.head_warmup_epochs=2", "train.epochs=1")
    written, states = embedtrain.write_epoch_checkpoint, []

    def keep(path, state):
        states.append({k: v.clone() for k, v in state["net"].items()})
        written(path, state)

    monkeypatch.setattr(embedtrain, "write_epoch_checkpoint", keep)
    model = train(synth_data, cfg, tmp_path / "run", quiet=True)
    shipped = {f"backbone.{k}": p.detach() for k, p in port.embedding_parameters().items()}
    assert len(states) == 3
    for net in states[:2]:  # the warm-up: BirdNET's layers as shipped, the head moving
        assert all(torch.equal(net[k], shipped[k]) for k in shipped)
    assert not torch.equal(states[0]["head.head.att.weight"], states[1]["head.head.att.weight"])
    moved = [k for k in shipped if not torch.equal(states[2][k], shipped[k])]
    assert moved and all(torch.equal(weights(model)[k], states[2][k]) for k in shipped)
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert metrics["head_only"].tolist() == [True, True, False]
    # train.max_steps caps the epochs after the warm-up: one step of them
    capped = config(TAIL, tmp_path / "cache", "train.head_warmup_epochs=1", "train.epochs=3", "train.max_steps=1")
    train(synth_data, capped, tmp_path / "capped", quiet=True)
    steps = pd.read_csv(tmp_path / "capped" / "metrics.csv")["step"].tolist()
    assert len(steps) == 2 and steps[1] == steps[0] + 1


@needs_birdnet
def test_a_run_stopped_before_its_first_epoch_ended_does_not_say_resume(synth_data, tmp_path, capsys, monkeypatch):
    from conftest import run_cli

    from birdsed.train import embedtrain

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while the embeddings are cached: no epoch kept

    run = tmp_path / "run"
    argv = ["train", "--data", synth_data, "--config", "birdnet", "--out", run, "--quiet", "--epochs", "1"]
    argv += ["--set", f"data.embedding_cache={tmp_path / 'cache'}"]
    monkeypatch.setattr(embedtrain, "train_embedding_head", stopped)
    rc, out = run_cli(capsys, *argv)
    assert rc == 130 and "--resume continues" not in out and "No epoch had finished" in out, out
    rc, out = run_cli(capsys, *argv, "--resume")
    assert rc == 2 and "no checkpoint" in out, out
    # stopped after an epoch: the note says how to go on
    monkeypatch.undo()
    written = embedtrain.write_epoch_checkpoint

    def stopped_after_an_epoch(path, state):
        written(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(embedtrain, "write_epoch_checkpoint", stopped_after_an_epoch)
    rc, out = run_cli(capsys, *argv)
    assert rc == 130 and "The same command with --resume continues." in out.replace("\n", " "), out


@needs_birdnet
def test_a_resume_without_the_runs_validation_set_is_refused(synth_data, tmp_path):
    """A run validated on --val resumed without it (or the other way) kept the best epoch of the first part only,
    with empty validation columns after it in metrics.csv: refused by name before anything is embedded."""
    from birdsed.train.run import train

    val = tmp_path / "val"
    val.mkdir()
    for f in synth_data.iterdir():
        (val / f.name).symlink_to(f)
    run, other = tmp_path / "run", tmp_path / "other"
    cfg = config(FROZEN, tmp_path / "cache", "train.epochs=1")
    train(synth_data, cfg, run, val_data=val, quiet=True)
    train(synth_data, cfg, other, quiet=True)
    more = config(FROZEN, tmp_path / "cache", "train.epochs=2")
    with pytest.raises(ConfigError, match="trained with a validation split .* the data given have none"):
        train(synth_data, more, run, resume=True, quiet=True)
    with pytest.raises(ConfigError, match="trained without a validation split .* the data given have one"):
        train(synth_data, more, other, val_data=val, resume=True, quiet=True)
    assert len(pd.read_csv(run / "metrics.csv")) == len(pd.read_csv(other / "metrics.csv")) == 1
    train(synth_data, more, run, val_data=val, resume=True, quiet=True)
    assert pd.read_csv(run / "metrics.csv")["val_macro_ap"].notna().all()


def test_weights_that_do_not_fit_the_head_are_named():
    from birdsed.errors import ModelError
    from birdsed.model.embedhead import EmbeddingHead
    from birdsed.train.embedtrain import FrozenHead

    head = EmbeddingHead(3)
    learner = FrozenHead(head, features=None)
    state = learner.saved(head)
    learner.load(head, state, "last.pt")  # its own weights fit
    state.pop("mean")
    state["head.cla.weight"] = torch.zeros(5, 1024)
    state["stray"] = torch.zeros(1)
    with pytest.raises(
        ModelError, match=r"last.pt: .*missing \['mean'\], unexpected \['stray'\], misshapen \['head.cla"
    ):
        learner.load(head, state, "last.pt")


def test_the_data_check_names_what_differs(tmp_path):
    from birdsed.errors import ModelError
    from birdsed.train.checkpoint import check_same_data

    held = {"classes": ["a", "b"], "train": ["a/1.wav", "a/2.wav", "b/1.wav"], "val": ["b/2.wav"]}
    same = {k: list(v) for k, v in held.items()}
    check_same_data(tmp_path / "last.pt", held, same, validated=True)
    check_same_data(tmp_path / "last.pt", {"classes": ["a", "b"]}, same)  # an older checkpoint: classes alone
    for changed, said in [
        ({"classes": ["a"]}, "trained on 2 classes, the data given has 1 .not in the data: b."),
        ({"classes": ["b", "a"]}, "in another order"),
        ({"train": ["a/1.wav", "b/1.wav"]}, "on 4 recordings, the data given have 3 .not in the data: a/2.wav.: "),
        ({"train": [*held["train"], "c/9.wav"]}, "the data given have 5 .new: c/9.wav."),
        ({"val": []}, "trained with a validation split .* the data given have none"),
        # one recording moved between the splits: neither gone nor new
        ({"train": ["a/1.wav", "a/2.wav", "b/2.wav"], "val": ["b/1.wav"]}, "validated on other .*: b/1.wav, b/2"),
    ]:
        with pytest.raises(ConfigError, match=said):
            check_same_data(tmp_path / "last.pt", held, {**same, **changed}, validated=True)
    with pytest.raises(ModelError, match="record of the run's train is not a list of names"):
        check_same_data(tmp_path / "last.pt", {**held, "train": {"a": 1}}, same)


@needs_birdnet
def test_a_resume_with_other_recordings_of_the_same_classes_is_refused(synth_data, tmp_path):
    from test_pipeline import _without_one_recording

    from birdsed.train.run import train

    run, other = tmp_path / "run", tmp_path / "other"
    gone = _without_one_recording(synth_data, other)
    train(synth_data, config(FROZEN, tmp_path / "cache", "train.epochs=1"), run, quiet=True)
    more = config(FROZEN, tmp_path / "cache", "train.epochs=2")
    with pytest.raises(ConfigError, match=f"recordings, the data given have .*not in the data: {gone}"):
        train(other, more, run, resume=True, quiet=True)
    assert len(pd.read_csv(run / "metrics.csv")) == 1
    train(synth_data, more, run, resume=True, quiet=True)
    assert len(pd.read_csv(run / "metrics.csv")) == 2

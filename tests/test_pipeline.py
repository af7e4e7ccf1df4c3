"""The real pipeline end to end on a tiny synthetic set: train -> model dir -> predict -> evaluate -> tune."""

import importlib.util
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TRAINED
from safetensors.torch import load_file, save_file

from birdsed.cli import build_parser, main
from birdsed.config import apply_overrides, load_config
from birdsed.errors import ConfigError, ModelError
from birdsed.infer.outputs import DecisionOptions
from birdsed.infer.predict import run_predict
from birdsed.model.modeldir import load_model_dir
from birdsed.rows import DETECTION_COLUMNS, DETECTION_NAME_COLUMNS, DETECTION_PLACE_COLUMNS
from birdsed.train.data import load_train_data
from birdsed.train.run import train


def test_train_writes_run_folder_and_model_loads_back(trained_run):
    run, model_dir = trained_run
    assert (run / "config.yaml").is_file() and (run / "metrics.csv").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    metrics = pd.read_csv(run / "metrics.csv")
    assert {"train_loss_step", "val_loss", "val_f1_clipwise", "val_f1_segmentwise", "val_f1_att", "val_map"} <= set(
        metrics.columns
    )
    model, thr, meta = load_model_dir(model_dir)
    assert meta["classes"] == sorted(meta["classes"]) and len(meta["classes"]) == 3
    assert meta["train"]["steps"] == 3, meta["train"]
    # identical outputs to the checkpointed weights
    state = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    from birdsed.train.task import SEDTask

    task = SEDTask(load_config_dict(run), meta["classes"])
    task.load_state_dict(state)
    wave = torch.randn(2, 32000 * 5) * 0.1
    with torch.no_grad():
        a, b = task.model.eval()(wave), model(wave)
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def load_config_dict(run):
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())


def test_resume_continues_from_saved_step(trained_run, synth_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run[0], run)  # the session's run stays as it is
    cfg = apply_overrides(load_config("small"), [*TRAINED, "train.max_steps=5", "train.epochs=10"])
    model_dir = train(synth_data, cfg, run, resume=True, quiet=True)
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["train"]["steps"] == 5
    steps = pd.read_csv(run / "metrics.csv")["step"].dropna()
    assert steps.max() >= 4


def _without_one_recording(synth_data, dest):
    """A copy of synth_data (links) whose train.csv leaves its first recording out: the same classes, one fewer
    recording."""
    dest.mkdir()
    for f in synth_data.iterdir():
        if f.name != "train.csv":
            (dest / f.name).symlink_to(f)
    table = pd.read_csv(synth_data / "train.csv")
    table.iloc[1:].to_csv(dest / "train.csv", index=False)
    return f"{table.iloc[0]['ebird_code']}/{table.iloc[0]['filename']}"


def test_resume_with_other_recordings_of_the_same_classes_is_refused(trained_run, synth_data, tmp_path):
    """Another data set with the same classes went on silently (other items, a model of neither data set): the
    checkpoint keeps its recordings, and a resume that reads others is refused naming them."""
    run = tmp_path / "run"
    shutil.copytree(trained_run[0], run)
    other = tmp_path / "other"
    gone = _without_one_recording(synth_data, other)
    cfg = apply_overrides(load_config("small"), [*TRAINED, "train.max_steps=5", "train.epochs=10"])
    before = (run / "checkpoints" / "last.ckpt").read_bytes()
    with pytest.raises(ConfigError, match=r"recordings, the data given have .*not in the data: .*") as e:
        train(other, cfg, run, resume=True, quiet=True)
    assert gone in str(e.value) or "validation" in str(e.value)
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == before
    train(synth_data, cfg, run, resume=True, quiet=True)  # the run's own data: goes on


def test_max_steps_0_is_no_limit_also_on_resume(trained_run, synth_data, tmp_path, capsys):
    """train.max_steps 0 (now --max-steps 0 too, to lift a limit on resume) was Lightning's "stop at once": an
    untrained model was written, 0 steps."""
    from conftest import run_cli

    run = tmp_path / "run"
    shutil.copytree(trained_run[0], run)  # 5 epochs at most, stopped by max_steps 3
    argv = ["train", "--data", synth_data, "--config", "small", "--out", run, "--quiet", "--resume"]
    argv += [x for kv in TRAINED for x in ("--set", kv)]
    rc, out = run_cli(capsys, *argv, "--max-steps", "0")
    assert rc == 0, out
    meta = json.loads((run / "model" / "model.json").read_text())["train"]
    assert meta["epochs"] == 5 and meta["steps"] > 3, meta


def test_a_fresh_train_into_a_finished_run_says_it_replaces_its_model(trained_run, synth_data, tmp_path, caplog):
    """Without --resume, a finished run's model was replaced without a word (found by a hostile try)."""
    run = tmp_path / "run"
    shutil.copytree(trained_run[0], run)
    cfg = apply_overrides(load_config("small"), TRAINED)
    train(synth_data, cfg, run, quiet=True)
    assert f"{run / 'model'} holds a trained model: this run replaces it" in caplog.text
    caplog.clear()
    train(synth_data, cfg, tmp_path / "new", quiet=True)
    assert "holds a trained model" not in caplog.text


def test_resume_without_checkpoint_is_an_error(synth_data, tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(synth_data, apply_overrides(load_config("small"), TRAINED), tmp_path, resume=True, quiet=True)


def test_corrupt_recording_is_skipped_and_reported(synth_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    first = pd.read_csv(data / "train.csv").iloc[0]
    (data / "train_audio" / first["ebird_code"] / first["filename"]).write_bytes(b"corrupt" * 99)
    train(data, apply_overrides(load_config("small"), TRAINED), tmp_path / "run", quiet=True)
    report = pd.read_csv(tmp_path / "run" / "store" / "report.csv")
    assert report["recording_id"].tolist() == [f"{first['ebird_code']}/{first['filename']}"]


def test_predict_writes_every_output_and_resumes(trained_run, synth_data, tmp_path):
    _, model_dir = trained_run
    out = tmp_path / "pred"
    s = run_predict(
        model_dir,
        [],
        out,
        test_csv=synth_data / "test.csv",
        formats=("csv", "raven", "audacity"),
        workers=1,
        quiet=True,
    )
    assert s.n_files == 2 and not s.errors and s.audio_s == pytest.approx(60.0, abs=0.2)
    scores = pd.read_parquet(out / "scores.parquet")
    assert list(scores.columns[:4]) == ["file", "start_s", "end_s", "output"]
    assert set(scores["output"]) == {"clipwise", "segmentwise", "att"}
    test = pd.read_csv(synth_data / "test.csv")
    sub = pd.read_csv(out / "submission.csv", keep_default_na=False)
    assert sub["row_id"].tolist() == test["row_id"].tolist()  # every row, in order
    assert (sub["birds"] != "").all()
    # site_3 rows are decided on the whole file: the max over its rows, then the threshold
    from birdsed.kaggle.cornell import read_kaggle_test

    t = read_kaggle_test(synth_data / "test.csv")
    site3 = t[t["seconds"].isna()].iloc[0]
    _, thr, meta = load_model_dir(model_dir)
    kind = meta.get("default_output", "segmentwise")
    rows = scores[(scores["file"] == site3["path"]) & (scores["output"] == kind)]
    whole = rows[meta["classes"]].max().to_numpy()
    expect = (
        " ".join(c for c, v, th in zip(meta["classes"], whole, thr.vector(kind, meta["classes"])) if v >= th)
        or "nocall"
    )
    assert sub.loc[sub["row_id"] == site3["row_id"], "birds"].item() == expect
    # a site_1 row is the decision on its own 5 s row
    r1 = t[t["seconds"].notna()].iloc[2]
    row = scores[(scores["file"] == r1["path"]) & (scores["output"] == kind) & (scores["start_s"] == r1["seconds"] - 5)]
    vals = row[meta["classes"]].to_numpy()[0]
    expect = (
        " ".join(c for c, v, th in zip(meta["classes"], vals, thr.vector(kind, meta["classes"])) if v >= th) or "nocall"
    )
    assert sub.loc[sub["row_id"] == r1["row_id"], "birds"].item() == expect
    det = pd.read_csv(out / "detections.csv")
    assert list(det.columns) == [*DETECTION_COLUMNS, *DETECTION_NAME_COLUMNS, *DETECTION_PLACE_COLUMNS]
    assert list(det.columns)[:5] == ["file", "start_s", "end_s", "label", "score"]  # the old columns first, as before
    raven = list((out / "raven").glob("*.txt"))
    assert len(raven) == 2
    table = pd.read_csv(raven[0], sep="\t")
    assert list(table.columns)[:5] == ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)"]
    for f in (out / "audacity").glob("*.txt"):
        for line in f.read_text().splitlines():
            start, end, label = line.split("\t")
            assert float(start) < float(end) and label
    # a re-run skips everything; interrupting after one file and re-running finishes the rest
    again = run_predict(model_dir, [], out, test_csv=synth_data / "test.csv", quiet=True)
    assert again.n_done_before == 2
    first_part = sorted((out / "parts").glob("*.parquet"))[0]
    first_part.unlink()
    again = run_predict(model_dir, [], out, test_csv=synth_data / "test.csv", quiet=True)
    assert again.n_done_before == 1
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "scores.parquet").sort_values(["file", "output", "start_s"]).reset_index(drop=True),
        scores.sort_values(["file", "output", "start_s"]).reset_index(drop=True),
        atol=1e-6,
    )


def test_predict_folder_with_a_corrupt_file(trained_run, synth_data, tmp_path):
    import shutil

    _, model_dir = trained_run
    folder = tmp_path / "in"
    shutil.copytree(synth_data / "test_audio", folder)
    (folder / "broken.mp3").write_bytes(b"ID3" + b"\x00" * 500)
    out = tmp_path / "pred"
    code = main(["predict", "--model", str(model_dir), str(folder), "--out", str(out), "--quiet", "--workers", "0"])
    assert code == 1
    errors = pd.read_csv(out / "errors.csv")
    assert len(errors) == 1 and errors["file"].iloc[0].endswith("broken.mp3")
    assert pd.read_parquet(out / "scores.parquet")["file"].nunique() == 2


def test_predict_refuses_another_models_folder(trained_run, synth_data, tmp_path):
    _, model_dir = trained_run
    run_predict(model_dir, [str(synth_data / "test_audio")], tmp_path, quiet=True, workers=0)
    with pytest.raises(ConfigError, match="another model or window setting"):
        run_predict(model_dir, [str(synth_data / "test_audio")], tmp_path, quiet=True, workers=0, hop_s=1.0)


def test_predict_loops_short_recordings_as_the_model_trained(trained_run, tmp_path):
    """The small preset crops short recordings looped (data.short_policy=loop): model.json says so, and predict
    fills a window with a short recording the same way unless told --short pad."""
    from conftest import write_audio

    _, model_dir = trained_run
    assert json.loads((model_dir / "model.json").read_text())["short_policy"] == "loop"
    clip = str(write_audio(tmp_path / "short.wav", seconds=1.5, freq_hz=3000.0))
    scores = {}
    for policy in (None, "loop", "pad"):
        out = tmp_path / f"pred_{policy}"
        run_predict(model_dir, [clip], out, quiet=True, workers=0, short_policy=policy)
        scores[policy] = pd.read_parquet(out / "scores.parquet").drop(columns=["file"])
    pd.testing.assert_frame_equal(scores[None], scores["loop"])
    assert not np.allclose(scores["loop"].iloc[:, 3:].to_numpy(float), scores["pad"].iloc[:, 3:].to_numpy(float))
    assert json.loads((tmp_path / "pred_pad" / "run.json").read_text())["short_policy"] == "pad"  # the override
    assert "short_policy" not in json.loads((tmp_path / "pred_None" / "run.json").read_text())  # as before


def test_evaluate_and_tune_cli(trained_run, synth_data, tmp_path, capsys):
    _, model_dir = trained_run
    out = tmp_path / "pred"
    run_predict(model_dir, [], out, test_csv=synth_data / "test.csv", quiet=True, workers=0)
    truth = synth_data / "test_labels.csv"
    assert main(["evaluate", "--pred", str(out / "submission.csv"), "--truth", str(truth), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert 0 <= rep["row_f1"] <= 1 and rep["n_rows"] == len(pd.read_csv(truth))
    assert main(["evaluate", "--scores", str(out / "scores.parquet"), "--truth", str(truth), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert set(rep["outputs"]) == {"segmentwise", "att", "clipwise"}
    assert len(rep["outputs"]["att"]["sweep"]) > 10
    model_copy = tmp_path / "model"
    import shutil

    shutil.copytree(model_dir, model_copy)
    assert (
        main(["tune", "--model", str(model_copy), "--scores", str(out / "scores.parquet"), "--truth", str(truth)]) == 0
    )
    meta = json.loads((model_copy / "model.json").read_text())
    assert meta["default_output"] in ("segmentwise", "att", "clipwise")


def test_every_verb_has_help_with_an_example(capsys):
    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices
    assert {"demo", "synth", "prepare", "train", "predict", "evaluate", "tune"} <= set(verbs)
    for name, sub in verbs.items():
        text = sub.format_help()
        assert "example:" in text and f"birdsed {name}" in text
    out = subprocess.run([sys.executable, "-m", "birdsed", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "predict" in out.stdout


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["prepare", str(tmp_path / "nope"), "--out", str(tmp_path / "s")]) == 2
    assert "not found" in capsys.readouterr().err


def test_ddp_two_cpu_processes(synth_data, tmp_path):
    """Lightning's DDP with the gloo backend: two CPU processes train a few steps and write one model."""
    store = tmp_path / "store"
    assert main(["prepare", str(synth_data), "--out", str(store), "--workers", "1"]) == 0
    cmd = [
        sys.executable,
        "-m",
        "birdsed",
        "train",
        "--data",
        str(store),
        "--config",
        "small",
        "--out",
        str(tmp_path / "run"),
        "--device",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--quiet",
        *sum((["--set", o] for o in TRAINED), []),
        "--batch-size",
        "2",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "run" / "model" / "weights.safetensors").is_file()
    meta = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert meta["train"]["steps"] == 3, meta["train"]


def test_onnx_export_matches_pytorch_and_predict_backend(trained_run, synth_data, tmp_path):
    import shutil

    from birdsed.model.export import export_onnx

    _, model_dir = trained_run
    model_copy = tmp_path / "model"
    shutil.copytree(model_dir, model_copy)
    audio = sorted((synth_data / "test_audio").glob("*.mp3"))[0]
    diffs = export_onnx(model_copy, model_copy / "model.onnx", check_audio=audio)
    assert {"random/clipwise", "audio/framewise"} <= set(diffs) and max(diffs.values()) < 1e-3
    a = run_predict(model_copy, [str(audio)], tmp_path / "torch", quiet=True, workers=0)
    b = run_predict(model_copy, [str(audio)], tmp_path / "onnx", quiet=True, workers=0, backend="onnx")
    assert not a.errors and not b.errors
    sa = pd.read_parquet(tmp_path / "torch" / "scores.parquet")
    sb = pd.read_parquet(tmp_path / "onnx" / "scores.parquet")
    classes = [c for c in sa.columns if c not in ("file", "start_s", "end_s", "output")]
    assert np.abs(sa[classes].to_numpy() - sb[classes].to_numpy()).max() < 1e-3
    backends = ["onnx"]
    if importlib.util.find_spec("openvino"):
        c = run_predict(model_copy, [str(audio)], tmp_path / "ov", quiet=True, workers=0, backend="openvino")
        sc = pd.read_parquet(tmp_path / "ov" / "scores.parquet")
        assert not c.errors and np.abs(sa[classes].to_numpy() - sc[classes].to_numpy()).max() < 1e-3
        backends.append("openvino")
    # the model trained again into its folder: the export is of the old weights, refused by both backends
    weights = load_file(str(model_copy / "weights.safetensors"))
    first = next(k for k, v in weights.items() if v.is_floating_point())
    save_file({**weights, first: weights[first] + 0.01}, str(model_copy / "weights.safetensors"))
    for backend in backends:
        with pytest.raises(ModelError, match=r"model.onnx was exported from other weights .* `birdsed export --model"):
            run_predict(model_copy, [str(audio)], tmp_path / f"stale_{backend}", quiet=True, backend=backend)


def test_onnx_backend_without_export_is_a_clear_error(trained_run, synth_data, tmp_path):

    _, model_dir = trained_run
    with pytest.raises(ModelError, match="birdsed export"):
        run_predict(model_dir, [str(synth_data / "test_audio")], tmp_path, quiet=True, backend="onnx")


class FakeKaggle:
    """A stand-in with the interface of kaggle.api.kaggle_api_extended.KaggleApi."""

    def __init__(self, existing=(), zip_payload=None):
        self.calls, self.existing, self.zip_payload = [], set(existing), zip_payload

    def competition_download_files(self, competition, path=None, force=False, quiet=True, unzip=False):
        self.calls.append(("competition_download_files", competition))
        import zipfile

        with zipfile.ZipFile(f"{path}/{competition}.zip", "w") as z:
            for name, text in (self.zip_payload or {}).items():
                z.writestr(name, text)

    def dataset_download_files(self, dataset, path=None, force=False, quiet=True, unzip=False, licenses=[]):
        self.calls.append(("dataset_download_files", dataset))

    def dataset_status(self, dataset):
        if dataset not in self.existing:
            raise RuntimeError("404 Not Found")
        return "ready"

    def dataset_create_new(self, folder, public=False, quiet=False, convert_to_csv=True, dir_mode="skip"):
        self.calls.append(("dataset_create_new", folder))

    def dataset_create_version(
        self, folder, version_notes, quiet=False, convert_to_csv=True, delete_old_versions=False
    ):
        self.calls.append(("dataset_create_version", folder, version_notes))


def test_kaggle_credentials_are_checked_first(tmp_path, monkeypatch):
    from birdsed.kaggle.api import KaggleError, credentials_problem, download

    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "cfg"))
    problem = credentials_problem()
    assert "kaggle.json" in problem and "KAGGLE_USERNAME" in problem
    with pytest.raises(KaggleError, match="no Kaggle credentials"):
        download(tmp_path / "data", client=FakeKaggle())
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    assert credentials_problem() is None
    assert credentials_problem({"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}, home=tmp_path / "nowhere") is None


def test_kaggle_download_and_publish_with_a_stand_in(trained_run, tmp_path, monkeypatch):
    from birdsed.kaggle.api import KaggleError, download, publish

    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setenv("KAGGLE_KEY", "secret")
    api = FakeKaggle(zip_payload={"train.csv": "ebird_code,filename\n", "test.csv": "site,row_id,seconds,audio_id\n"})
    out = download(tmp_path / "data", client=api)
    assert (out / "train.csv").is_file() and not list(out.glob("*.zip"))
    assert api.calls == [("competition_download_files", "birdsong-recognition")]
    _, model_dir = trained_run
    folder, action = publish(model_dir, "me/birdsed-test", folder=tmp_path / "ds", dry_run=True, client=api)
    meta = json.loads((folder / "dataset-metadata.json").read_text())
    assert action == "dry-run" and meta["id"] == "me/birdsed-test" and meta["licenses"]
    assert (folder / "weights.safetensors").is_file() and (folder / "model.json").is_file()
    folder, action = publish(model_dir, "me/birdsed-test", folder=tmp_path / "ds", client=api)
    assert action == "created" and api.calls[-1][0] == "dataset_create_new"
    api.existing.add("me/birdsed-test")
    folder, action = publish(model_dir, "me/birdsed-test", "v2", folder=tmp_path / "ds", client=api)
    assert action == "versioned" and api.calls[-1] == ("dataset_create_version", str(folder), "v2")

    class Offline(FakeKaggle):
        def competition_download_files(self, *a, **k):
            raise ConnectionError("Name or service not known")

    with pytest.raises(KaggleError, match="online"):
        download(tmp_path / "d2", client=Offline())
    with pytest.raises(Exception, match="owner/slug"):
        publish(model_dir, "no-slash", folder=tmp_path / "x", dry_run=True)


def test_export_cli_writes_kaggle_folder(trained_run, tmp_path):
    _, model_dir = trained_run
    assert (
        main(["export", "--model", str(model_dir), "--kaggle-dataset", str(tmp_path / "k"), "--dataset", "me/m"]) == 0
    )
    assert json.loads((tmp_path / "k" / "dataset-metadata.json").read_text())["id"] == "me/m"


def test_recipe_options_train(synth_data, tmp_path):
    """EMA of weights, the framewise loss, mixup with label union and bird-free negatives all run, in bf16-mixed
    (the GPU's default precision, here on the CPU)."""
    cfg = apply_overrides(
        load_config("small"),
        [
            *TRAINED,
            "train.precision=bf16-mixed",
            "train.ema=true",
            "train.ema_decay=0.9",
            "train.framewise_loss_weight=0.5",
            "augment.mixup_union=true",
            "augment.mixup_p=1.0",
            "augment.negatives_p=0.5",
        ],
    )
    model_dir = train(synth_data, cfg, tmp_path, quiet=True)
    model, _, meta = load_model_dir(model_dir)
    assert meta["train"]["steps"] == 3


def test_training_without_a_validation_split_keeps_the_last_epoch(synth_data, tmp_path):
    """data.val_fraction=0: every recording is trained on, nothing is validated, the last epoch's weights are saved."""
    cfg = apply_overrides(load_config("small"), [*TRAINED, "data.val_fraction=0"])
    model_dir = train(synth_data, cfg, tmp_path, quiet=True)
    model, _, meta = load_model_dir(model_dir)
    assert meta["train"]["steps"] == 3 and meta["train"]["best_score"] is None
    assert "val_map" not in pd.read_csv(tmp_path / "metrics.csv").columns
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    head = {k.removeprefix("model."): v for k, v in last.items() if k.startswith("model.head.")}
    assert head and all(torch.equal(model.state_dict()[k], v) for k, v in head.items())


@pytest.mark.parametrize(
    "override,key",
    [
        ("data.val_fraction=-0.1", "data.val_fraction"),
        ("data.val_fraction=1.0", "data.val_fraction"),
        ("data.subsample=0", "data.subsample"),
        ("data.subsample=1.5", "data.subsample"),
        ("data.short_policy=wrap", "data.short_policy"),
        ("frontend.compression=log", "frontend.compression"),
        ("augment.lowpass_p=0.5 frontend.compression=pcen", "augment.lowpass_p"),
    ],
)
def test_a_value_out_of_range_is_a_clear_error_before_anything_is_written(synth_data, tmp_path, override, key):
    with pytest.raises(ConfigError, match=key):
        train(
            synth_data,
            apply_overrides(load_config("small"), [*TRAINED, *override.split()]),
            tmp_path / "run",
            quiet=True,
        )
    assert not (tmp_path / "run").exists()


def test_subsample_bags_the_training_recordings_per_seed(synth_data, tmp_path):
    """data.subsample: each seed trains on its own stratified part of the training recordings, every label kept."""

    def bag(seed, fraction=0.5):
        cfg = apply_overrides(load_config("small"), [*TRAINED, f"data.subsample={fraction}", f"train.seed={seed}"])
        return load_train_data(synth_data, tmp_path / "run", cfg)

    full, half, other = bag(0, 1.0), bag(0), bag(1)
    assert set(full.val.table["path"]) == set(half.val.table["path"])  # the validation split is not touched
    paths = [set(d.train.table["path"]) for d in (full, half, other)]
    assert paths[1] < paths[0] and paths[2] < paths[0] and paths[1] != paths[2]
    assert abs(len(paths[1]) - len(paths[0]) / 2) <= len(set(full.train.classes))  # half of each label, rounded
    assert set(half.train.classes) == set(full.train.classes)
    assert paths[1] == set(bag(0).train.table["path"])  # seeded


def test_head_warm_up_then_fine_tune_with_frozen_batchnorm(synth_data, tmp_path):
    """LP-FT: the head warms up on frozen features, then fine-tuning leaves the backbone's BatchNorm statistics
    alone."""
    cfg = apply_overrides(load_config("small"), [*TRAINED, "train.head_warmup_epochs=2", "train.freeze_bn=true"])
    model_dir = train(synth_data, cfg, tmp_path, quiet=True)
    model, _, _ = load_model_dir(model_dir)
    fresh = torch.nn.BatchNorm2d(1)
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(torch.all(m.running_mean == fresh.running_mean) for m in norms)  # random init: still 0
    assert not torch.all(model.frontend.norm.running_mean == 0)  # the front end's statistics were fitted
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 32000))["clipwise"]).all()


def test_label_files_of_recordings_with_the_same_name_do_not_collide(trained_run, synth_data, tmp_path):
    import shutil

    _, model_dir = trained_run
    src = sorted((synth_data / "test_audio").glob("*.mp3"))[0]
    for d in ("a", "b"):
        (tmp_path / "in" / d).mkdir(parents=True)
        shutil.copy(src, tmp_path / "in" / d / "rec.mp3")
    run_predict(
        model_dir, [str(tmp_path / "in")], tmp_path / "out", formats=("raven", "audacity"), quiet=True, workers=0
    )
    assert len(list((tmp_path / "out" / "raven").glob("*.txt"))) == 2
    assert len(list((tmp_path / "out" / "audacity").glob("*.txt"))) == 2


def test_predict_post_processing_options(trained_run, synth_data, tmp_path):
    """--neighbour-smoothing and --max-birds through the whole predict path."""
    _, model_dir = trained_run
    run_predict(
        model_dir,
        [],
        tmp_path,
        test_csv=synth_data / "test.csv",
        quiet=True,
        workers=0,
        decision=DecisionOptions(output="clipwise", threshold=0.0, max_birds=1, neighbour_smoothing="sum"),
    )
    sub = pd.read_csv(tmp_path / "submission.csv", keep_default_na=False)
    assert (sub["birds"].str.split().str.len() == 1).all()  # threshold 0: every row has a bird, at most one

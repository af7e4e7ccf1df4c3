import numpy as np
import pandas as pd
import pytest
from conftest import write_audio

from birdsed.evaluate.metrics import average_precision, micro_prf, per_class_prf, row_f1, row_f1_per_row
from birdsed.evaluate.tune import per_class_thresholds, tune
from birdsed.infer.decide import Thresholds, decide, labels_of, smooth_rows
from birdsed.infer.grid import RowAccumulator, rows_from_windows, segment_rows, window_starts
from birdsed.infer.stream import WindowStream
from birdsed.model.windows import piece_windows
from birdsed.rows import n_rows


def test_window_starts_edge_cases():
    assert window_starts(100, 160, 80).tolist() == [0]  # shorter than a window
    assert window_starts(160, 160, 80).tolist() == [0]
    assert window_starts(161, 160, 80).tolist() == [0, 80]  # last window padded
    assert window_starts(400, 160, 80).tolist() == [0, 80, 160, 240]
    assert window_starts(410, 160, 80).tolist() == [0, 80, 160, 240, 320]


def test_n_rows():
    assert n_rows(0.5) == 1 and n_rows(5.0) == 1 and n_rows(5.6) == 2 and n_rows(600.0) == 120
    assert n_rows(12.0) == 3 and n_rows(10.51) == 3
    # a recorder's few extra samples make no row (they repeated the row before: a second detection, card, clip)
    assert n_rows(5.0039) == 1 and n_rows(60.02) == 12 and n_rows(10.5) == 2


def test_rows_take_max_over_overlapping_windows():
    starts = np.array([0.0, 2.5, 5.0, 7.5])  # 12 s of audio
    scores = np.array([[0.1], [0.9], [0.2], [0.3]], dtype=np.float32)
    rows = rows_from_windows(starts, 5.0, scores, duration_s=12.0)
    # row 0 [0,5): windows 0,1 ; row 1 [5,10): windows 1,2,3 ; row 2 [10,12): window 3
    assert rows[:, 0].tolist() == pytest.approx([0.9, 0.9, 0.3])


def test_accumulator_in_pieces_equals_at_once():
    rng = np.random.default_rng(0)
    starts = np.arange(40) * 2.5
    scores = rng.random((40, 3)).astype(np.float32)
    acc = RowAccumulator(3)
    for a, b in [(0, 7), (7, 8), (8, 40)]:
        acc.add_windows(starts[a:b], 5.0, scores[a:b])
    np.testing.assert_array_equal(acc.result(100.0), rows_from_windows(starts, 5.0, scores, 100.0))


def test_segment_pooling_uses_segment_centres():
    assert segment_rows(np.array([2.5]), 5.0, 4).tolist() == [[0, 0, 1, 1]]  # centres 3.125, 3.75...
    acc = RowAccumulator(1)
    seg = np.array([[[0.1, 0.9, 0.2, 0.3]]], dtype=np.float32)  # (W=1, K=1, T'=4), centres 3.1, 4.4, 5.6, 6.9
    acc.add_segments(np.array([2.5]), 5.0, seg)
    assert acc.result(10.0)[:, 0].tolist() == pytest.approx([0.9, 0.3])


@pytest.mark.parametrize("decode_threads", [1, 2, 5])
def test_window_stream_matches_direct_windowing(tmp_path, decode_threads):
    from birdsed.audio.decode import load_audio

    paths = [str(write_audio(tmp_path / f"{i}.wav", seconds=s, rate=44100)) for i, s in enumerate([3.0, 12.3, 7.5])]
    ds = WindowStream(
        paths, window_s=5.0, hop_s=2.5, batch_size=3, sample_rate_hz=32000, chunk_s=1.7, decode_threads=decode_threads
    )
    got: dict[int, dict[int, np.ndarray]] = {}
    done = {}
    for b in ds:
        assert sum(p.n_samples for p in b["pieces"]) == len(b["audio"])
        for p in b["pieces"]:
            for j, w in enumerate(piece_windows(b["audio"], p, ds.window, ds.hop).numpy()):
                assert p.first_window + j not in got.get(p.file, {})
                got.setdefault(p.file, {})[p.first_window + j] = w
        for d in b["done"]:
            done[d.index] = d
    for i, p in enumerate(paths):
        x = load_audio(p)
        starts = window_starts(len(x), 160000, 80000)
        assert done[i].n_windows == len(starts) == len(got[i]) and done[i].n_samples == len(x)
        for k, s in enumerate(starts):
            expect = np.zeros(160000, np.float32)
            piece = x[s : s + 160000]
            expect[: len(piece)] = piece
            np.testing.assert_array_equal(got[i][k], expect)


def test_a_recording_shorter_than_a_window_is_marked_and_looped_on_request(tmp_path):
    """The stream zero-pads a 3 s recording's one window and marks it; fitted_audio loops it for a model trained
    so. A longer recording's last window stays zero-padded either way."""
    from birdsed.audio.decode import load_audio
    from birdsed.model.windows import fitted_audio

    paths = [
        str(write_audio(tmp_path / f"{i}.wav", seconds=s, freq_hz=f))
        for i, (s, f) in enumerate([(3.0, 700.0), (7.5, 900.0)])
    ]
    got = {}
    for b in WindowStream(paths, 5.0, 2.5, 4, 32000, chunk_s=1.3):
        for p in b["pieces"]:
            for policy in ("pad", "loop"):
                for j, w in enumerate(fitted_audio(b["audio"], p, policy).unfold(0, 160000, 80000).numpy()):
                    got[p.file, p.first_window + j, policy] = w, p.short_len
    short, long_ = load_audio(paths[0]), load_audio(paths[1])
    assert sorted({k[:2] for k in got}) == [(0, 0), (1, 0), (1, 1)]
    assert got[0, 0, "pad"][1] == len(short) and got[1, 1, "pad"][1] == 0
    np.testing.assert_array_equal(got[0, 0, "pad"][0], np.pad(short, (0, 160000 - len(short))))
    np.testing.assert_array_equal(got[0, 0, "loop"][0], np.concatenate([short, short[: 160000 - len(short)]]))
    for policy in ("pad", "loop"):
        np.testing.assert_array_equal(got[1, 1, policy][0], np.pad(long_[80000:], (0, 160000 - len(long_) + 80000)))


@pytest.mark.parametrize("pooling,workers", [("window", 0), ("segment", 2)])
def test_predict_files_equals_the_model_on_each_window(tmp_path, pooling, workers):
    """The streamed path (stretches, shared spectrogram, batches across files) scores every window as
    the model does on that window alone."""
    import torch

    from birdsed.audio.decode import load_audio
    from birdsed.config import FrontendConfig, ModelConfig
    from birdsed.infer.loop import predict_files
    from birdsed.model.detector import segment_scores, window_scores
    from birdsed.model.sed import SEDModel

    torch.manual_seed(0)
    model = SEDModel(
        FrontendConfig(n_mels=64), ModelConfig(backbone="mobilenetv3_small_100", dropout=0.0), ["a", "b", "c"]
    ).eval()
    paths = [
        str(write_audio(tmp_path / f"{i}.wav", seconds=s, rate=22050, freq_hz=f))
        for i, (s, f) in enumerate([(3.0, 800.0), (41.3, 2000.0), (12.5, 4000.0)])
    ]
    got = {
        r.path: r
        for r in predict_files(model, paths, batch_size=5, workers=workers, quiet=True, pooling=pooling, device="cpu")
    }
    for p in paths:
        x = torch.from_numpy(load_audio(p))
        starts = window_starts(len(x), 160000, 80000)
        padded = torch.nn.functional.pad(x, (0, int(starts[-1]) + 160000 - len(x)))
        with torch.inference_mode():
            out = model(padded.unfold(0, 160000, 80000))
        acc = {k: RowAccumulator(3) for k in ("segmentwise", "att", "clipwise")}
        segs = segment_scores(out) if pooling == "segment" else {}
        for k, v in window_scores(out).items():
            if k in segs:
                acc[k].add_segments(starts / 32000, 5.0, segs[k])
            else:
                acc[k].add_windows(starts / 32000, 5.0, v.numpy())
        for k in acc:
            np.testing.assert_allclose(got[p].rows[k], acc[k].result(len(x) / 32000), atol=1e-5)


def test_bf16_predict_stays_close_to_fp32(tmp_path):
    """bf16 autocast (the GPU default, and --precision bf16 on CPUs) changes the row scores only by rounding."""
    import torch

    from birdsed.config import FrontendConfig, ModelConfig
    from birdsed.infer.loop import predict_files
    from birdsed.model.sed import SEDModel

    torch.manual_seed(0)
    model = SEDModel(
        FrontendConfig(n_mels=64), ModelConfig(backbone="mobilenetv3_small_100", dropout=0.0), ["a", "b"]
    ).eval()
    paths = [
        str(write_audio(tmp_path / f"{i}.wav", seconds=s, freq_hz=f))
        for i, (s, f) in enumerate([(9.0, 900.0), (14.0, 3000.0)])
    ]
    run = lambda precision: {
        r.path: r.rows for r in predict_files(model, paths, quiet=True, device="cpu", precision=precision)
    }  # noqa: E731
    fp32, bf16 = run("fp32"), run("bf16")
    for p in paths:
        for k in fp32[p]:
            assert fp32[p][k].shape == bf16[p][k].shape
            np.testing.assert_allclose(bf16[p][k], fp32[p][k], atol=3e-2)


def test_bf16_asked_of_a_model_that_runs_outside_torch_is_said_once(caplog):
    """--precision bf16 of a model that LiteRT, ONNX Runtime or OpenVINO runs in float32 (BirdNET on the CPU): said
    once a process, naming the runtime; not for the default precision, nor for a model torch runs."""
    import torch

    from birdsed.infer import loop
    from birdsed.model.ensemble import Ensemble

    class Runs:
        classes, sample_rate_hz, window_s, hop_s, short_policy = ["a"], 48_000, 3.0, 3.0, "loop"

        def __init__(self, runtime):
            self.runtime = runtime

        def for_inference(self, device):
            return self

        def float32_runtime(self, device):
            return self.runtime

    loop.said_float32.cache_clear()
    cpu = torch.device("cpu")
    with caplog.at_level("WARNING"):
        for _ in range(2):
            loop.ready(Runs("LiteRT"), "cpu", "bf16")
        loop.ready(Runs("LiteRT"), "cpu", "auto")
        loop.ready(Runs(None), "cpu", "bf16")
    said = [r.getMessage() for r in caplog.records if "--precision bf16" in r.getMessage()]
    assert said == [
        "--precision bf16: on cpu this model runs in LiteRT, in float32 (bf16 applies where torch runs a model)"
    ]
    both = Ensemble([Runs("LiteRT"), Runs(None), Runs("ONNX Runtime"), Runs("LiteRT")])
    assert both.float32_runtime(cpu) == "LiteRT, ONNX Runtime"
    assert Ensemble([Runs(None), Runs(None)]).float32_runtime(cpu) is None


def test_default_decoding_processes(monkeypatch):
    import torch

    from birdsed.infer.loop import default_workers

    for cores, cpu, gpu in [(1, 0, 1), (2, 0, 1), (16, 4, 15)]:
        monkeypatch.setattr("os.cpu_count", lambda: cores)
        assert (default_workers(torch.device("cpu")), default_workers(torch.device("cuda"))) == (cpu, gpu)


@pytest.mark.parametrize("decode_threads", [1, 2])
def test_window_stream_reports_bad_files(tmp_path, decode_threads):
    good = write_audio(tmp_path / "good.wav", seconds=6.0)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....garbage")
    (tmp_path / "cut.wav").write_bytes(good.read_bytes()[:3000])  # a valid header, then the data stops
    files = [str(tmp_path / "bad.wav"), str(good), str(tmp_path / "cut.wav"), str(good)]
    batches = list(WindowStream(files, 5.0, 2.5, 4, 32000, decode_threads=decode_threads))
    dones = sorted((d for b in batches for d in b["done"]), key=lambda d: d.index)
    assert [d.index for d in dones] == [0, 1, 2, 3]
    assert dones[0].error is not None and dones[1].error is None and dones[3].error is None
    assert dones[1].n_windows == dones[3].n_windows == 2
    assert all(p.file in (1, 2, 3) for b in batches for p in b["pieces"])


def test_decide_thresholds_per_class_and_max_birds():
    thr = Thresholds(per_class={"clipwise": {"b": 0.2}})
    v = thr.vector("clipwise", ["a", "b", "c"])
    assert v.tolist() == pytest.approx([0.5, 0.2, 0.5])
    scores = np.array([[0.6, 0.3, 0.9], [0.1, 0.1, 0.1]], dtype=np.float32)
    present = decide(scores, v)
    assert labels_of(present, ["a", "b", "c"]) == ["a b c", "nocall"]
    assert labels_of(decide(scores, v, max_birds=2), ["a", "b", "c"]) == ["a c", "nocall"]


def test_neighbour_smoothing():
    s = np.array([[0.1], [0.5], [0.2]])
    assert smooth_rows(s, "sum")[:, 0].tolist() == pytest.approx([0.6, 0.8, 0.7])
    assert smooth_rows(s, "max")[:, 0].tolist() == pytest.approx([0.5, 0.5, 0.5])
    assert smooth_rows(s, None) is s


def test_row_f1_hand_cases():
    T = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=bool)
    P = np.array([[0, 0], [1, 0], [1, 0], [0, 0]], dtype=bool)
    # nocall/nocall = 1; exact = 1; {a} vs {a,b} = 2*1/(1+2); nocall vs {b} = 0
    assert row_f1_per_row(P, T).tolist() == pytest.approx([1, 1, 2 / 3, 0])
    assert row_f1(P, T) == pytest.approx((1 + 1 + 2 / 3 + 0) / 4)
    assert row_f1(np.zeros((3, 2), bool), np.zeros((3, 2), bool)) == 1.0  # all nocall
    assert row_f1(np.ones((1, 2), bool), np.zeros((1, 2), bool)) == 0.0  # birds predicted in a nocall row


def test_micro_and_per_class():
    T = np.array([[1, 0], [1, 1], [0, 0]], dtype=bool)
    P = np.array([[1, 1], [0, 1], [0, 0]], dtype=bool)
    p, r, f = micro_prf(P, T)
    assert (p, r) == pytest.approx((2 / 3, 2 / 3)) and f == pytest.approx(2 / 3)
    pc = per_class_prf(P, T, ["a", "b"]).set_index("class")
    assert pc.loc["a", "recall"] == 0.5 and pc.loc["b", "precision"] == 0.5 and pc.loc["a", "support"] == 2


def test_average_precision_perfect_and_skips_classes_without_positives():
    T = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=bool)
    S = np.array([[0.9, 0.1, 0.95], [0.2, 0.8, 0.95], [0.7, 0.3, 0.95]])
    macro, micro = average_precision(S, T)
    assert macro == pytest.approx(1.0) and micro < 1.0  # class c has no positive: left out of macro


def test_tuning_finds_better_thresholds():
    rng = np.random.default_rng(0)
    true = rng.random((300, 4)) < 0.2
    scores = np.clip(true * 0.35 + rng.random((300, 4)) * 0.5, 0, 1).astype(np.float32)
    scores[:, 3] = np.clip(true[:, 3] * 0.2 + rng.random(300) * 0.15, 0, 1)  # a class with low scores
    res = tune({k: scores for k in ("segmentwise", "att", "clipwise")}, true, ["a", "b", "c", "d"])
    assert res.after["clipwise"] >= res.global_only["clipwise"] >= res.before["clipwise"]
    assert res.after["clipwise"] > res.before["clipwise"] + 0.05
    assert res.thresholds.per_class["clipwise"]["d"] < res.thresholds.global_["clipwise"]


def test_per_class_thresholds_shrink_toward_global():
    rng = np.random.default_rng(1)
    true = np.zeros((200, 1), bool)
    true[:2, 0] = True  # two positives
    scores = rng.random((200, 1)) * 0.2
    scores[:2, 0] = 0.25
    free = per_class_thresholds(scores, true, 0.5, shrink=0.0)
    shrunk = per_class_thresholds(scores, true, 0.5, shrink=100.0)
    assert free[0] < 0.3 and abs(shrunk[0] - 0.5) < abs(free[0] - 0.5)


def test_a_short_tail_is_the_last_rows_in_scores_and_truth():
    """A 5.4 s recording has one row, [0, 5.4): a window or a call in its last 0.4 s counts in it (when the tail was
    simply dropped, a call annotated at 5.05-5.4 s was lost without a word)."""
    from birdsed.infer.grid import FileResult, rows_from_windows, rows_table
    from birdsed.rows import row_labels

    rows = rows_from_windows(np.array([0.0, 2.4]), 3.0, np.array([[0.1], [0.9]], np.float32), 5.4)
    assert rows.shape == (1, 1) and rows[0, 0] == np.float32(0.9)  # the window 2.4-5.4 s
    table = rows_table(FileResult("a.wav", 5.4, {k: rows for k in ("segmentwise", "att", "clipwise")}), ["x"])
    assert set(table["end_s"]) == {5.4}
    calls = pd.DataFrame({"start_s": [5.05, 1.0], "end_s": [5.4, 2.0], "label": ["tail", "early"]})
    assert row_labels(calls, n_rows(5.4)) == [{"tail", "early"}]
    assert row_labels(calls, 2) == [{"early"}, {"tail"}]  # a folder scored with a row for the tail

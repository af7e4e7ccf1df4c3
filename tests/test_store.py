import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import write_audio

from birdsed.audio.decode import load_audio
from birdsed.data.manifest import read_dataset
from birdsed.data.store import AudioStore, prepare, recording_key
from birdsed.errors import StoreError


def _dataset(tmp_path, n=4, bad=()):
    root = tmp_path / "data"
    lines = ["filename,labels"]
    rng = np.random.default_rng(0)
    for i in range(n):
        name = f"r{i}.flac"
        rate = [22050, 32000, 44100, 48000][i % 4]
        path = root / "audio" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(
            str(path), rng.uniform(-0.5, 0.5, (int(3.3 * rate), 1 + i % 2)).astype(np.float32), rate, subtype="PCM_24"
        )
        lines.append(f"{name},sp{i % 2}")
    for name in bad:
        (root / "audio" / name).write_bytes(b"garbage" * 50)
        lines.append(f"{name},sp0")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return read_dataset(root)


def test_crops_equal_decoded_audio(tmp_path):
    m = _dataset(tmp_path)
    prepare(m, tmp_path / "store", workers=1, quiet=True)
    store = AudioStore(tmp_path / "store")
    for rid, path in zip(m.table["recording_id"], m.table["path"]):
        full = load_audio(path)
        assert store.duration_s(rid) == pytest.approx(len(full) / 32000)
        crop = store.read(rid, 1.25, 1.5)
        assert len(crop) == 48000
        assert np.abs(crop - np.clip(full[40000:88000], -1, 1)).max() <= 0.5 / 32767 + 1e-7
        assert len(store.read(rid, 3.0, 5.0)) == len(full) - 96000  # shorter at the end
    idx = store.index
    assert set(idx["orig_rate_hz"]) == {22050, 32000, 44100, 48000} and set(idx["orig_channels"]) == {1, 2}
    assert list(store.manifest().table["primary_labels"]) == [["sp0"], ["sp1"], ["sp0"], ["sp1"]]


def test_bad_recordings_are_skipped_and_reported(tmp_path):
    m = _dataset(tmp_path, n=3, bad=["broken.flac"])
    result = prepare(m, tmp_path / "store", workers=2, quiet=True)
    assert (result.n_prepared, result.n_skipped) == (3, 1)
    report = AudioStore(tmp_path / "store").report()
    assert list(report["recording_id"]) == ["broken.flac"] and "broken.flac" in report.loc[0, "reason"]
    assert "broken.flac" not in AudioStore(tmp_path / "store")
    assert "1 skipped" in result.summary()


def test_resume_skips_finished_and_redoes_partial(tmp_path):
    m = _dataset(tmp_path, n=4)
    store_dir = tmp_path / "store"
    prepare(m, store_dir, workers=1, quiet=True)
    # simulate a run killed mid-way: one entry's json never written, another's audio half-written under a temp name
    key0 = recording_key("r0.flac")
    (store_dir / "audio" / f"{key0}.json").unlink()
    (store_dir / "audio" / f".{key0}.i16.birdsed-0badc0de.tmp.i16").write_bytes(b"\0" * 10)
    again = prepare(m, store_dir, workers=1, quiet=True)
    assert (again.n_prepared, again.n_resumed) == (1, 3)
    store = AudioStore(store_dir)
    np.testing.assert_allclose(store.read("r0.flac"), load_audio(m.table.loc[0, "path"]), atol=1 / 32767)


def test_changed_source_is_prepared_again(tmp_path):
    m = _dataset(tmp_path, n=2)
    prepare(m, tmp_path / "store", workers=1, quiet=True)
    write_audio(Path(m.table.loc[0, "path"]), seconds=1.0)
    again = prepare(m, tmp_path / "store", workers=1, quiet=True)
    assert again.n_prepared == 1
    assert AudioStore(tmp_path / "store").duration_s("r0.flac") == pytest.approx(1.0)


def test_store_errors_are_clear(tmp_path):
    with pytest.raises(StoreError, match="not a prepared store"):
        AudioStore(tmp_path)
    m = _dataset(tmp_path, n=1)
    prepare(m, tmp_path / "store", workers=1, quiet=True)
    store = AudioStore(tmp_path / "store")
    with pytest.raises(StoreError, match="no recording"):
        store.read("nope.wav")
    meta = json.loads((tmp_path / "store" / "store.json").read_text())
    (tmp_path / "store" / "store.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(StoreError, match="version"):
        AudioStore(tmp_path / "store")


def test_a_store_keeps_its_data_sets_species_names(tmp_path):
    """`train --data STORE` names its classes as `--data DATA` does: the store keeps the data set's species.csv
    (was: lost, so a BirdNET head on a store mapped no class to BirdNET's labels and a model kept no aliases); a
    data set that dropped its species.csv drops it from the store too."""
    from birdsed.model.birdnet_labels import aliases_entry, dataset_aliases

    m = _dataset(tmp_path)
    (m.root / "species.csv").write_text("label,scientific_name,common_name\nsp0,Parus major,Great Tit\n")
    prepare(m, tmp_path / "store", workers=1, quiet=True)
    assert dataset_aliases(tmp_path / "store") == dataset_aliases(m.root) == {"sp0": ["Parus major", "Great Tit"]}
    assert aliases_entry(tmp_path / "store") == aliases_entry(m.root)
    (m.root / "species.csv").unlink()
    prepare(m, tmp_path / "store", workers=1, quiet=True)
    assert dataset_aliases(tmp_path / "store") == {}


def test_a_stopped_prepare_does_not_decode_what_was_still_queued(tmp_path):
    """Ctrl-C of `prepare --workers N`: the pool's `with` waited for every queued recording before the stop came
    through (found by a review: the whole data set was decoded after Ctrl-C). A job marks each recording it starts."""
    import subprocess
    import sys
    import textwrap

    root = tmp_path / "data"
    (root / "audio").mkdir(parents=True)
    for i in range(40):
        (root / "audio" / f"r{i}.wav").write_bytes(b"RIFF")
    (root / "labels.csv").write_text("filename,labels\n" + "".join(f"r{i}.wav,sp\n" for i in range(40)))
    script = textwrap.dedent(
        f"""
        import os, signal, sys, threading, time
        from pathlib import Path
        from birdsed.data import store
        from birdsed.data.manifest import read_dataset

        def slow(rid, src, audio_dir):
            Path(r"{tmp_path}", "started-" + rid).touch()
            time.sleep(0.5)
            return rid, None, "not decoded"

        store._prepare_one = slow
        threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        try:
            store.prepare(read_dataset(Path(r"{root}")), Path(r"{tmp_path / "store"}"), workers=2, quiet=True)
        except KeyboardInterrupt:
            sys.exit(130)
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 130, res.stderr
    started = len(list(tmp_path.glob("started-*")))
    assert 0 < started < 20, started  # about 2 workers x 1.5 s / 0.5 s, and those running; was all 40

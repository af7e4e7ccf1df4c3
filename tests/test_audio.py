import numpy as np
import pytest
import soundfile as sf
from conftest import write_audio

from birdsed.audio.decode import find_audio_files, load_audio, stream_audio
from birdsed.errors import AudioDecodeError


@pytest.mark.parametrize(
    "ext,fmt,subtype",
    [
        ("wav", "WAV", "PCM_16"),
        ("wav", "WAV", "PCM_24"),
        ("wav", "WAV", "PCM_32"),
        ("wav", "WAV", "FLOAT"),
        ("flac", "FLAC", "PCM_16"),
        ("ogg", "OGG", "VORBIS"),
        ("mp3", "MP3", "MPEG_LAYER_III"),
        ("opus", "OGG", "OPUS"),
    ],
)
@pytest.mark.parametrize("rate", [16000, 22050, 32000, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_every_format_rate_and_layout_decodes_to_mono_32k(tmp_path, ext, fmt, subtype, rate, channels):
    if fmt == "OGG" and subtype == "OPUS" and rate not in (16000, 48000):
        pytest.skip("opus encodes only at 8/12/16/24/48 kHz")
    if fmt == "MP3" and rate == 16000 and channels == 2:
        rate = 24000
    path = write_audio(tmp_path / f"a.{ext}", 2.0, rate, channels, subtype, freq_hz=1000.0, format=fmt)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 64000) <= 0.05 * 64000 + 2000  # lossy codecs add priming/padding
    # the tone survives: energy at 1 kHz dominates the spectrum
    spec = np.abs(np.fft.rfft(x[8000:40000]))
    assert abs(np.argmax(spec) * 32000 / 32000 - 1000) < 20
    expected_amp = 0.5 if channels == 1 else 0.5 * 0.95  # mean of the two channels
    assert abs(np.abs(x[8000:40000]).max() - expected_amp) < 0.08


def test_lossless_round_trip_is_exact_at_32k(tmp_path):
    x = (np.random.default_rng(0).uniform(-0.5, 0.5, 32000)).astype(np.float32)
    sf.write(str(tmp_path / "a.wav"), x, 32000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "a.wav"), x)


def test_stereo_mixdown_is_the_mean(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.uniform(-0.5, 0.5, (32000, 3)).astype(np.float32)
    sf.write(str(tmp_path / "a.wav"), x, 32000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "a.wav"), x.mean(axis=1), atol=1e-7)


@pytest.mark.parametrize("rate", [22050, 32000, 44100, 48000])
@pytest.mark.parametrize("chunk_s", [0.1, 0.77, 2.0, 3.3])
def test_stream_equals_whole_read_across_chunk_boundaries(tmp_path, rate, chunk_s):
    x = np.random.default_rng(2).uniform(-0.5, 0.5, (int(7.3 * rate), 2)).astype(np.float32)
    path = tmp_path / "a.flac"
    sf.write(str(path), x, rate, subtype="PCM_24")
    whole = load_audio(path)
    chunks = list(stream_audio(path, chunk_s=chunk_s))
    assert all(len(c) == round(chunk_s * 32000) for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= round(chunk_s * 32000)
    np.testing.assert_array_equal(np.concatenate(chunks), whole)
    assert len(whole) == round(7.3 * rate * 32000 / rate) or abs(len(whole) - 7.3 * 32000) <= 1


def test_missing_file(tmp_path):
    with pytest.raises(AudioDecodeError, match="not found"):
        load_audio(tmp_path / "nope.wav")


def test_empty_file(tmp_path):
    (tmp_path / "e.wav").write_bytes(b"")
    with pytest.raises(AudioDecodeError, match="empty"):
        load_audio(tmp_path / "e.wav")


def test_corrupt_file(tmp_path):
    (tmp_path / "c.flac").write_bytes(b"this is not audio at all" * 100)
    with pytest.raises(AudioDecodeError, match="c.flac"):
        load_audio(tmp_path / "c.flac")


def test_truncated_file(tmp_path):
    path = write_audio(tmp_path / "t.flac", 5.0, 44100)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(AudioDecodeError, match="t.flac"):
        load_audio(path)


def test_header_only_wav_has_no_frames(tmp_path):
    path = write_audio(tmp_path / "h.wav", 1.0, 32000)
    path.write_bytes(path.read_bytes()[:44])
    with pytest.raises(AudioDecodeError, match="h.wav"):
        load_audio(path)


def test_unsupported_file(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(AudioDecodeError, match="x.txt"):
        load_audio(tmp_path / "x.txt")


def test_nan_samples_are_an_error(tmp_path):
    x = np.zeros(32000, np.float32)
    x[20000] = np.nan
    sf.write(str(tmp_path / "n.wav"), x, 32000, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match="NaN"):
        load_audio(tmp_path / "n.wav")


def test_find_audio_files_recurses(tmp_path):
    write_audio(tmp_path / "a" / "b" / "x.wav")
    write_audio(tmp_path / "y.flac")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in find_audio_files([tmp_path])] == ["x.wav", "y.flac"]


def test_a_missing_relative_path_says_where_it_was_read_from(tmp_path, monkeypatch):
    """review and report read predict's paths as given: a relative one, from another folder, was only "file not
    found" (the README said the outputs' paths were absolute)."""
    from birdsed.audio.decode import audio_info

    monkeypatch.chdir(tmp_path)
    said = f"rec/a.wav: file not found .a relative path, read from {tmp_path}.$"
    with pytest.raises(AudioDecodeError, match=said):
        audio_info("rec/a.wav")
    with pytest.raises(AudioDecodeError, match="a.wav: file not found$"):
        audio_info(tmp_path / "a.wav")

"""Nothing birdsed loads is unpickled with code: a planted checkpoint is refused and never runs."""

import pickle

import pytest
import torch

from birdsed.errors import ModelError
from birdsed.train.checkpoint import checkpoint_state


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (str(self.marker), "w"))


def test_a_planted_pickle_checkpoint_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "best.ckpt"
    ckpt.write_bytes(pickle.dumps({"state_dict": {"w": _Payload(marker)}}))
    with pytest.raises(ModelError, match="best.ckpt"):
        checkpoint_state(ckpt)
    assert not marker.exists()


def test_a_checkpoint_of_tensors_loads(tmp_path):
    ckpt = tmp_path / "best.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, ckpt)
    assert torch.equal(checkpoint_state(ckpt)["w"], torch.ones(2))
    ckpt.write_bytes(b"truncated")
    with pytest.raises(ModelError, match="not a readable checkpoint"):
        checkpoint_state(ckpt)


def test_a_checkpoint_write_that_fails_midway_leaves_the_last_one_whole(tmp_path, monkeypatch):
    """Checkpoints are written beside their path and renamed; a write that dies (a kill, a full disk) leaves the
    previous last.ckpt readable, no temporary beside it and nothing in the system's temporary folder."""
    from birdsed.train.checkpoint import AtomicCheckpointIO, read_checkpoint

    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(system_tmp))
    monkeypatch.setattr("tempfile.tempdir", None)
    io, last = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, last)
    real_save = torch.save

    def dies_midway(obj, f, *args, **kwargs):  # f: the open temporary file
        real_save(obj, f, *args, **kwargs)
        f.truncate(100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, last)
    assert read_checkpoint(last)["epoch"] == 1
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"] and not list(system_tmp.iterdir())

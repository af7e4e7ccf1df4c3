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

"""The options of every verb that runs a model over recordings window by window (predict, embed, pseudo-label):
the window and hop, short recordings, the batch and the device, written once."""

from __future__ import annotations

import argparse

from birdsed.cli.values import count, number
from birdsed.config import DEVICES, MAX_WINDOW_S, MIN_HOP_S, MIN_WINDOW_S, SHORT_POLICIES


def add_window_options(p: argparse.ArgumentParser) -> None:
    """--window-s, --hop-s, --short, --batch-size, --device (their defaults: the model's, 64, auto)."""
    p.add_argument(
        "--window-s",
        type=number(MIN_WINDOW_S, MAX_WINDOW_S),
        help=f"window length, {MIN_WINDOW_S:g} to {MAX_WINDOW_S:g} s (default: the model's: 5 s, BirdNET 3 s)",
    )
    p.add_argument(
        "--hop-s",
        type=number(MIN_HOP_S, MAX_WINDOW_S),
        help=f"hop between windows, {MIN_HOP_S:g} to {MAX_WINDOW_S:g} s (default: the model's: 2.5 s, BirdNET 3 s)",
    )
    p.add_argument(
        "--short",
        choices=SHORT_POLICIES,
        help="a recording shorter than a window: repeat it to fill the window, or zero-pad it "
        "(default: as the model trained)",
    )
    p.add_argument("--batch-size", type=count(1, 65536), default=64, help="windows per forward pass (1 to 65536)")
    p.add_argument("--device", default="auto", choices=DEVICES)


def window_arguments(a: argparse.Namespace) -> dict:
    """What add_window_options parsed, as the keywords run_predict, run_embed and pseudo_label take."""
    return {
        "window_s": a.window_s,
        "hop_s": a.hop_s,
        "short_policy": a.short,
        "batch_size": a.batch_size,
        "device": a.device,
    }

"""Inference-time folding of each BatchNorm into the convolution that feeds it.

In eval mode a BatchNorm is a fixed affine map per channel, so when its input is a
convolution's output it can be folded into that convolution's weights and bias: the same
outputs to float rounding, one pass over the feature map fewer. The small model spent about
a quarter of its CPU time in batch_norm (docs/BENCHMARKS.md).

The pairs are found by running an example through the module (forward hooks see which
convolution's output each BatchNorm takes), not by guessing from module order, and the folded
module is checked against the original on that example; anything unexpected leaves the module
as it was.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
from timm.layers import BatchNormAct2d, Conv2dSame
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

log = logging.getLogger(__name__)


def conv_bn_pairs(module: nn.Module, run: Callable[[], torch.Tensor]) -> tuple[list[tuple[str, str]], torch.Tensor]:
    """(conv name, batchnorm name) for every eval-mode BatchNorm2d whose input is exactly the output of a
    Conv2d, each module called once by `run`; also returns run()'s output (the reference)."""
    names = {id(m): n for n, m in module.named_modules()}
    calls: dict[int, int] = {}
    conv_out: dict[
        int, tuple[nn.Module, torch.Tensor]
    ] = {}  # id(output) -> (conv, output kept alive so ids stay unique)
    pairs: list[tuple[nn.Module, nn.Module]] = []

    def after_conv(conv, args, out):
        calls[id(conv)] = calls.get(id(conv), 0) + 1
        conv_out[id(out)] = (conv, out)

    def before_bn(bn, args):
        calls[id(bn)] = calls.get(id(bn), 0) + 1
        hit = conv_out.get(id(args[0]))
        if hit is not None and hit[1] is args[0]:
            pairs.append((hit[0], bn))

    hooks = [
        m.register_forward_hook(after_conv) for m in module.modules() if type(m) in (nn.Conv2d, Conv2dSame)
    ]  # linear in weight and bias (not e.g. StdConv2d)
    hooks += [
        m.register_forward_pre_hook(before_bn)
        for m in module.modules()
        if type(m) in (nn.BatchNorm2d, BatchNormAct2d) and not m.training and m.track_running_stats
    ]
    try:
        with torch.inference_mode():
            reference = run()
    finally:
        for h in hooks:
            h.remove()
    once = [(c, b) for c, b in pairs if calls[id(c)] == 1 and calls[id(b)] == 1]
    return [(names[id(c)], names[id(b)]) for c, b in once], reference


def _without_norm(bn: nn.Module) -> nn.Module:
    """What is left of a BatchNorm once its affine map lives in the convolution: nothing, or timm's drop + act."""
    return nn.Sequential(bn.drop, bn.act) if isinstance(bn, BatchNormAct2d) else nn.Identity()


def fold_batchnorm(module: nn.Module, run: Callable[[], torch.Tensor], rtol: float = 1e-4) -> int:
    """Fold BatchNorms into their convolutions in place (module in eval mode); returns how many.

    run() calls the module on an example (e.g. one window's spectrogram). If the folded module's
    output on it differs from the original's by more than rtol of its largest value, the original
    is restored and 0 returned.
    """
    pairs, reference = conv_bn_pairs(module, run)
    if not pairs:
        return 0
    saved = {n: module.get_submodule(n) for pair in pairs for n in pair}
    originals = {
        c: (saved[c].weight.detach().clone(), None if saved[c].bias is None else saved[c].bias.detach().clone())
        for c, _ in pairs
    }
    with torch.no_grad():
        for c_name, b_name in pairs:
            conv, bn = saved[c_name], saved[b_name]
            conv.weight, conv.bias = fuse_conv_bn_weights(
                conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
            )
            _replace(module, b_name, _without_norm(bn))
        with torch.inference_mode():
            folded = run()
        err = (folded.float() - reference.float()).abs().max().item()
        scale = max(reference.float().abs().max().item(), 1.0)
        if err <= rtol * scale:
            return len(pairs)
        log.warning("BatchNorm folding changed the output by %.3g (of %.3g); running unfolded", err, scale)
        for c_name, b_name in pairs:
            conv = saved[c_name]
            conv.weight = nn.Parameter(originals[c_name][0])
            conv.bias = None if originals[c_name][1] is None else nn.Parameter(originals[c_name][1])
            _replace(module, b_name, saved[b_name])
    return 0


def _replace(module: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, child, new)

"""Classifiers on window embeddings from verdicts: every class at once, each trained only on the windows that have a
verdict for it (a mask), so a class's "no" never counts against another.

Two kinds, measured against each other in benchmarks/bench_learn.py (docs/BENCHMARKS.md, "Active learning"):

  linear  one logistic regression per class (model/linearhead.py), L2-penalised, fitted by L-BFGS on the whole
          (small) training set: the default (on NIPS4B the head was within its spread at 10-100 verdicts per class,
          +0.01 macro AP on average, and took 2.5x as long per round)
  head    birdsed's attention head on BirdNET embeddings (model/embedhead.py; a 1-hidden-layer network on one
          3 s embedding), trained by AdamW with dropout

The training set is the verdicts' windows plus `background` random windows of the archive taken as weak negatives
(a class with only "yes" verdicts, one example call, still gets a boundary); per class, positives and negatives
weigh the same in total (class-balanced), a background window a tenth of a verified "no".

    ts = TrainingSet(x, y, w)                            # x (N, D); y, w (N, K): targets and their weights (0: none)
    head = fit(ts, "linear")                             # a torch module: (B, 1, D) -> the SED head's outputs
    p = score(head, vectors)                             # (n, K) probabilities
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from birdsed.errors import LearnError

CLASSIFIERS = ("linear", "head")
DEFAULT_CLASSIFIER = "linear"
L2 = 1e-2  # the linear kind's penalty on the standardised weights (per class; its loss is a weighted mean)
HEAD_STEPS, HEAD_BATCH, HEAD_LR, HEAD_WEIGHT_DECAY, HEAD_DROPOUT = 150, 128, 1e-3, 1e-2, 0.5
LBFGS_ITERATIONS = 100


@dataclass(frozen=True)
class TrainingSet:
    """Windows with verdicts: x [shape=(N, D)] float32, y [shape=(N, K)] 1 yes / 0 no, w [shape=(N, K)] the weight
    of each target (0 where the window has no verdict for that class)."""

    x: np.ndarray
    y: np.ndarray
    w: np.ndarray

    def __post_init__(self) -> None:
        n, k = self.y.shape
        assert self.x.ndim == 2 and len(self.x) == n and self.w.shape == (n, k), (self.x.shape, self.y.shape)

    def balanced(self) -> np.ndarray:
        """The weights rescaled so that, per class, positives and negatives each sum to 1/2. [shape=(N, K)]"""
        pos, neg = self.w * (self.y > 0.5), self.w * (self.y <= 0.5)
        sp, sn = pos.sum(0, keepdims=True), neg.sum(0, keepdims=True)
        return (0.5 * pos / np.where(sp > 0, sp, 1) + 0.5 * neg / np.where(sn > 0, sn, 1)).astype(np.float32)


def check_trainable(ts: TrainingSet, classes: list[str]) -> None:
    """A LearnError naming the classes that lack a positive or a negative (nothing to draw a boundary between)."""
    pos = ((ts.y > 0.5) & (ts.w > 0)).any(0)
    neg = ((ts.y <= 0.5) & (ts.w > 0)).any(0)
    bad = [f"{c} ({'no yes' if not p else 'no no'})" for c, p, q in zip(classes, pos, neg) if not (p and q)]
    if bad:
        raise LearnError(f"classes without both a yes and a no to learn from: {', '.join(bad[:10])}")


def standardise(head: nn.Module, x: np.ndarray) -> torch.Tensor:
    """Set the head's mean and std buffers from x; returns x as a tensor."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    head.mean.copy_(t.mean(0))
    head.std.copy_(t.std(0).clamp_min(1e-3) if len(t) > 1 else torch.ones(t.shape[1]))
    return t


def fit_linear(ts: TrainingSet, l2: float = L2) -> nn.Module:
    """One L2-penalised logistic regression per class (masked, class-balanced), by full-batch L-BFGS."""
    from birdsed.model.linearhead import LinearHead

    head = LinearHead(ts.y.shape[1], ts.x.shape[1])
    x = standardise(head, ts.x)
    y, w = torch.from_numpy(ts.y.astype(np.float32)), torch.from_numpy(ts.balanced())
    opt = torch.optim.LBFGS(
        head.parameters(), lr=1.0, max_iter=LBFGS_ITERATIONS, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (F.binary_cross_entropy_with_logits(head.logits(x), y, reduction="none") * w).sum()
        loss = loss + 0.5 * l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head.eval()


def fit_head(ts: TrainingSet, seed: int = 0, steps: int = HEAD_STEPS) -> nn.Module:
    """birdsed's attention head (embedhead.EmbeddingHead) on one embedding per window, masked and class-balanced."""
    from birdsed.model.embedhead import EmbeddingHead

    torch.manual_seed(seed)
    head = EmbeddingHead(ts.y.shape[1], HEAD_DROPOUT, dim=ts.x.shape[1])
    x = standardise(head, ts.x)[:, None, :] * 1.0  # (N, T' = 1, D)
    y, w = torch.from_numpy(ts.y.astype(np.float32)), torch.from_numpy(ts.balanced())
    opt = torch.optim.AdamW(head.parameters(), lr=HEAD_LR, weight_decay=HEAD_WEIGHT_DECAY)
    gen = torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(steps):
        i = torch.randint(len(x), (min(HEAD_BATCH, len(x)),), generator=gen)  # a minibatch, drawn with replacement
        p = head(x[i])["clipwise"].clamp(1e-6, 1 - 1e-6)
        loss = (F.binary_cross_entropy(p, y[i], reduction="none") * w[i]).sum() * (len(x) / len(i))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread for the block: a training set of verdicts is small, and on a busy machine torch's
    OpenMP threads wait on each other (a 1,500 x 1,024 x 62 product and its gradient: 12 ms on one thread, 128 ms
    on two, with the machine's 2 cores shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit(ts: TrainingSet, classifier: str = DEFAULT_CLASSIFIER, seed: int = 0) -> nn.Module:
    """The classifier of kind `classifier` (CLASSIFIERS) on ts."""
    if classifier not in CLASSIFIERS:
        raise LearnError(f"classifier {classifier!r}: valid: {list(CLASSIFIERS)}")
    torch.manual_seed(seed)
    with one_thread():
        return fit_linear(ts) if classifier == "linear" else fit_head(ts, seed)


@torch.no_grad()
def score(head: nn.Module, vectors: np.ndarray) -> np.ndarray:
    """(n, D) embeddings -> (n, K) probabilities (the window's clipwise score)."""
    x = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))[:, None, :]  # (n, T' = 1, D)
    with one_thread():
        return head(x)["clipwise"].numpy()

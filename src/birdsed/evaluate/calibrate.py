"""Calibration from verdicts: per species, the probability that a detection is right as a function of its score, and
the score threshold where that probability reaches a chosen precision (Wood & Kahl 2024's logistic regression of the
verdict on the score's logit), partially pooled across species.

The model, for species c and a clip with score s (x = logit(s), clipped to [1e-4, 1 - 1e-4]):

    P(yes | s) = sigmoid(a_c + b_c x),     (a_c, b_c) ~ Normal((a_0, b_0), I / lambda)

(a_0, b_0) is one fit over every species' verdicts (lightly ridged, so that separable data stays finite). Each
species' (a_c, b_c) is its posterior mode: its own log-likelihood plus an L2 pull of strength lambda toward the
pooled coefficients, so a species with few verdicts stays near the pooled curve and one with many follows its own.
lambda is chosen by empirical Bayes: of the grid LAMBDAS, the value that maximises the sum over species of the
Laplace approximation of the marginal likelihood of their verdicts.

The threshold for precision p is the score where P(yes | s) = p: logit(t) = (logit(p) - a_c) / b_c, so every detection
above it is right with probability at least p (b_c > 0); where that is past the highest score (1 - EPS), p is not
reachable and the species keeps its threshold. The estimated precision there comes with a 95 % interval
from the delta method on the posterior covariance (H + lambda I)^-1 of (a_c, b_c). `yes` is 1, `no` (or another
species) 0, `unsure` is left out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from birdsed.decisions import logit, sigmoid
from birdsed.errors import ReviewError

LAMBDAS = np.logspace(-2, 3, 26)  # candidate prior precisions
POOLED_RIDGE = 1e-2
MIN_VERDICTS = 10  # a species with fewer verdicts (yes + no) gets no threshold: listed as too few to trust
Z95 = 1.959964


@dataclass
class SpeciesCalibration:
    """One species' fit and threshold (threshold None when not calibrated; `reason` says why)."""

    label: str
    n: int
    n_yes: int
    a: float
    b: float
    threshold: float | None
    precision: float | None  # the estimated precision at the threshold (the asked one)
    precision_lo: float | None  # its 95 % interval
    precision_hi: float | None
    n_above: int  # verdicts with a score >= threshold
    yes_above: int  # ... of them yes
    reason: str = ""


@dataclass
class Calibration:
    precision: float
    lam: float
    pooled: tuple[float, float]
    species: list[SpeciesCalibration]

    @property
    def calibrated(self) -> list[SpeciesCalibration]:
        return [s for s in self.species if s.threshold is not None]

    @property
    def too_few(self) -> list[SpeciesCalibration]:
        return [s for s in self.species if s.threshold is None]

    def to_dict(self, output: str) -> dict:
        """As model.json's "calibration" (what predict --calibrated reads: decisions.Calibration)."""
        return {
            "method": "logistic regression of the verdict on logit(score), partially pooled (see evaluate/calibrate)",
            "output": output,
            "precision": self.precision,
            "lambda": self.lam,
            "pooled": {"a": self.pooled[0], "b": self.pooled[1]},
            "per_class": {s.label: {k: v for k, v in asdict(s).items() if k != "label"} for s in self.species},
        }


def fit_map(x: np.ndarray, y: np.ndarray, mu: np.ndarray, lam: float, iters: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """The posterior mode of (a, b) under sigmoid(a + b x) with prior Normal(mu, I / lam), by Newton's method; and
    the Hessian of the negative log-posterior there. [x, y: shape=(n,)]"""
    X = np.stack([np.ones_like(x), x], axis=1)  # (n, 2)
    beta = mu.astype(np.float64).copy()
    H = np.eye(2) * lam
    for _ in range(iters):
        p = sigmoid(X @ beta)
        grad = X.T @ (p - y) + lam * (beta - mu)
        H = (X * (p * (1 - p))[:, None]).T @ X + lam * np.eye(2)
        step = np.linalg.solve(H, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return beta, H


def log_evidence(x: np.ndarray, y: np.ndarray, mu: np.ndarray, lam: float) -> float:
    """Laplace approximation of log p(y | lam): the log-likelihood at the mode, the prior there, and the volume term."""
    beta, H = fit_map(x, y, mu, lam)
    z = beta[0] + beta[1] * x
    loglik = float(np.sum(y * z - np.logaddexp(0, z)))
    prior = -0.5 * lam * float(np.sum((beta - mu) ** 2)) + np.log(lam)  # log det(lam I) / 2 for 2 coefficients
    return loglik + prior - 0.5 * float(np.linalg.slogdet(H)[1])


def calibrate(
    verdicts: pd.DataFrame, classes: list[str], precision: float = 0.9, min_verdicts: int = MIN_VERDICTS
) -> Calibration:
    """Fit every species with verdicts (columns label, verdict, score) and find its threshold for `precision`.
    A ReviewError for verdicts of a class not in `classes`, verdicts without scores, or no yes / no no at all."""
    v = verdicts[verdicts["verdict"].isin(["yes", "no"])]
    unknown = sorted(set(v["label"]) - set(classes))
    if unknown:
        raise ReviewError(
            f"verdicts for {len(unknown)} class(es) the model lacks: {', '.join(map(repr, unknown[:10]))}"
            " (calibrate the model the predictions were made with)"
        )
    if v["score"].isna().any():
        raise ReviewError(
            f"{int(v['score'].isna().sum())} verdict(s) without a score: add them with `birdsed review PRED --import "
            "F.csv`, which fills in each clip's score from the predictions"
        )
    for need in ("yes", "no"):
        if not (v["verdict"] == need).any():
            raise ReviewError(f"no {need!r} verdict at all: a precision needs right and wrong detections")
    x_all, y_all = logit(v["score"].to_numpy(np.float64)), (v["verdict"] == "yes").to_numpy(np.float64)
    pooled, _ = fit_map(x_all, y_all, np.zeros(2), POOLED_RIDGE)
    groups = {lab: g for lab, g in v.groupby("label", sort=False)}
    data = {
        lab: (logit(g["score"].to_numpy(np.float64)), (g["verdict"] == "yes").to_numpy(np.float64))
        for lab, g in groups.items()
    }
    lam = float(max(LAMBDAS, key=lambda lam: sum(log_evidence(x, y, pooled, lam) for x, y in data.values())))
    order = [c for c in classes if c in data]
    return Calibration(
        precision,
        lam,
        (float(pooled[0]), float(pooled[1])),
        [_species(c, *data[c], pooled, lam, precision, min_verdicts) for c in order],
    )


def _species(label, x, y, pooled, lam, precision, min_verdicts) -> SpeciesCalibration:
    beta, H = fit_map(x, y, pooled, lam)
    n, n_yes = len(y), int(y.sum())
    reason = ""
    if n_yes == 0:
        reason = f"no 'yes' among its {n} verdicts"
    elif n_yes == n:
        reason = f"no 'no' among its {n} verdicts"
    elif n < min_verdicts:
        reason = f"{n} verdicts (yes + no); at least {min_verdicts} needed"
    elif beta[1] <= 0:
        reason = "its verdicts are not more often yes at higher scores"
    base = SpeciesCalibration(label, n, n_yes, float(beta[0]), float(beta[1]), None, None, None, None, 0, 0, reason)
    if reason:
        return base
    x_t = (float(logit(precision)) - beta[0]) / beta[1]
    x_top = float(logit(1.0))  # the highest score's logit (scores are clipped to 1 - EPS)
    if x_t >= x_top:  # a threshold of 1: nothing would pass it (predict --calibrated then dropped every detection)
        top = float(sigmoid(beta[0] + beta[1] * x_top))
        base.reason = (
            f"precision {precision:g} is not reached at any score (its verdicts give {top:.2f} at the highest); "
            "ask for a lower --precision"
        )
        return base
    t = float(sigmoid(x_t))
    cov = np.linalg.inv(H)
    g = np.array([1.0, x_t])
    se = float(np.sqrt(g @ cov @ g))
    eta = beta[0] + beta[1] * x_t
    above = logit(np.full(1, t))[0] <= x
    return SpeciesCalibration(
        label,
        n,
        n_yes,
        float(beta[0]),
        float(beta[1]),
        round(t, 6),
        float(sigmoid(eta)),
        float(sigmoid(eta - Z95 * se)),
        float(sigmoid(eta + Z95 * se)),
        int(above.sum()),
        int(y[above].sum()),
    )


def probability(score: np.ndarray, a: float, b: float) -> np.ndarray:
    """Calibrated probability that a detection with `score` is right."""
    return sigmoid(a + b * logit(np.asarray(score, dtype=np.float64)))


def store_calibration(model_dir, cal: Calibration, output: str) -> None:
    """Write the calibration into model.json ("calibration") and each calibrated species' threshold into its
    per-class thresholds of `output`, as tune stores thresholds (other classes keep theirs)."""
    from pathlib import Path

    from birdsed.model.meta import read_model_meta, write_meta

    typed = read_model_meta(model_dir)
    meta, thresholds = dict(typed.raw), typed.thresholds
    own = thresholds.per_class.setdefault(output, {})
    for s in cal.calibrated:
        own[s.label] = s.threshold
    meta["thresholds"] = thresholds.to_dict()
    meta["calibration"] = cal.to_dict(output)
    write_meta(Path(model_dir), meta)

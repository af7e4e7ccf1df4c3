"""Self-training under domain shift, on synthetic data (issue #20): does a noisy student recover what a shift costs?

    python benchmarks/selftrain_synth.py --shift 1.0 --rounds 2 --out bench-out/selftrain_synth

Data (birdsed synth, one species set): focal training clips; test soundscapes of that set at --shift (quieter,
reverberant calls and an insect chorus that no training clip holds); validation soundscapes (other recordings,
the same shift) for choosing thresholds; a pool of unlabelled soundscapes (other recordings again, the same shift)
whose labels are never read; and, for the in-domain reference, the very test soundscapes without the shift
(and validation soundscapes without it).

Runs `self_train` (round0 = the baseline on the labels alone, then --rounds students on the labels and the
previous model's soft labels of the pool). Every model gets thresholds tuned on the validation soundscapes only
(a copy of the model, so the round models stay as self-train left them), then predicts the test soundscapes;
reported: row-wise micro F1 of the submission (tuned thresholds) and macro / micro AP of the soundscape rows (the
model's default output). The first row is the baseline in domain (no shift): the ceiling the drop is measured from.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_markdown, save_json  # noqa: E402

from birdsed.config import apply_overrides, load_config  # noqa: E402
from birdsed.data.synth import SynthConfig, synthesize  # noqa: E402
from birdsed.evaluate.score import scores_report_from_files  # noqa: E402
from birdsed.evaluate.submission import evaluate_submission
from birdsed.evaluate.tune import tune_model  # noqa: E402
from birdsed.infer.predict import run_predict  # noqa: E402
from birdsed.model.meta import read_model_meta  # noqa: E402
from birdsed.train.pseudo import SoftLabelOptions  # noqa: E402
from birdsed.train.selftrain import self_train  # noqa: E402


def make_data(out: Path, base: SynthConfig, shift: float, pool: int) -> dict[str, Path]:
    """The five synthetic sets (module docstring); each written once, a re-run reuses them."""
    sets = {
        "train": dataclasses.replace(base, shift=shift),
        "test_in": dataclasses.replace(base, clips_per_species=0, shift=0.0),
        "val": dataclasses.replace(
            base, clips_per_species=0, soundscapes=3, soundscape_seed=base.seed + 1000, shift=shift
        ),
        "val_in": dataclasses.replace(base, clips_per_species=0, soundscapes=3, soundscape_seed=base.seed + 1000),
        "pool": dataclasses.replace(
            base, clips_per_species=0, soundscapes=pool, soundscape_seed=base.seed + 2000, shift=shift
        ),
    }
    paths = {}
    for name, cfg in sets.items():
        paths[name] = out / "data" / name
        if not (paths[name] / "test.csv").is_file():
            synthesize(paths[name], cfg, quiet=True)
    if (paths["pool"] / "test_labels.csv").is_file():  # the pool's labels: out of the way, never read
        (paths["pool"] / "test_labels.csv").rename(paths["pool"] / "labels_never_read.csv")
    return paths


def score(model: Path, val: Path, test: Path, work: Path, pooling: str) -> dict:
    """Tune a copy of `model` on the validation soundscapes `val`, predict the test soundscapes `test`, score them."""
    if work.exists():
        shutil.rmtree(work)
    copy = work / "model"
    shutil.copytree(model, copy)
    run_predict(copy, [], work / "val", test_csv=val / "test.csv", quiet=True, pooling=pooling)
    tuned = tune_model(copy, work / "val" / "scores.parquet", val / "test_labels.csv")
    t0 = time.perf_counter()
    run_predict(copy, [], work / "test", test_csv=test / "test.csv", formats=("kaggle",), quiet=True, pooling=pooling)
    seconds = time.perf_counter() - t0
    rep = evaluate_submission(work / "test" / "submission.csv", test / "test_labels.csv")
    scores = scores_report_from_files(work / "test" / "scores.parquet", test / "test_labels.csv")
    out = read_model_meta(copy).default_output
    return {
        "row_f1": rep.row_f1,
        "output": tuned.best_output,
        "macro_ap": scores["outputs"][out]["macro_ap"],
        "micro_ap": scores["outputs"][out]["micro_ap"],
        "predict_s": round(seconds, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out/selftrain_synth"))
    ap.add_argument("--shift", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--species", type=int, default=6)
    ap.add_argument("--clips-per-species", type=int, default=20)
    ap.add_argument("--pool", type=int, default=8, help="unlabelled soundscapes of 120 s")
    ap.add_argument("--config", default="small")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--output", default="clipwise", help="the teacher output that gives the soft labels")
    ap.add_argument("--power", type=float, default=1.0)
    ap.add_argument("--floor", type=float, default=0.0)
    ap.add_argument("--pooling", default="segment")
    a = ap.parse_args()

    base = SynthConfig(
        species=a.species, clips_per_species=a.clips_per_species, soundscapes=4, soundscape_s=120.0, seed=a.seed
    )
    t0 = time.perf_counter()
    data = make_data(a.out, base, a.shift, a.pool)
    cfg = apply_overrides(load_config(a.config), a.set)
    opts = SoftLabelOptions(a.output, power=a.power, floor=a.floor)
    rounds = self_train(
        data["train"], [str(data["pool"] / "test_audio")], a.rounds, cfg, a.out / "st", opts, quiet=True
    )
    train_s = time.perf_counter() - t0
    rows = [
        {
            "model": "baseline, no shift (in domain)",
            "test": "unshifted",
            **score(Path(rounds["model"][0]), data["val_in"], data["test_in"], a.out / "eval" / "in_domain", a.pooling),
        }
    ]
    for k, model in zip(rounds["round"], rounds["model"]):
        name = "baseline (round 0)" if k == 0 else f"self-train round {k}"
        rows.append(
            {
                "model": name,
                "test": f"shift {a.shift:g}",
                **score(Path(model), data["val"], data["train"], a.out / "eval" / f"round{k}", a.pooling),
            }
        )
    print_markdown(
        rows,
        {
            "model": "{model}",
            "test soundscapes": "{test}",
            "row F1 (tuned)": "{row_f1:.3f}",
            "macro AP": "{macro_ap:.3f}",
            "micro AP": "{micro_ap:.3f}",
            "output": "{output}",
        },
    )
    drop = rows[0]["row_f1"] - rows[1]["row_f1"]
    if drop > 0:
        print(
            f"\nshift costs {drop:.3f} row F1; "
            f"the last round recovers {(rows[-1]['row_f1'] - rows[1]['row_f1']) / drop:.0%}"
        )
    save_json(
        a.out / "results.json",
        {
            "args": vars(a),
            "machine": machine(),
            "rows": rows,
            "rounds": rounds.to_dict("records"),
            "seconds": round(time.perf_counter() - t0),
            "train_and_pseudo_s": round(train_s),
        },
    )


if __name__ == "__main__":
    main()

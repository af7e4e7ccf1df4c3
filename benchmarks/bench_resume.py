"""kill -9 of `birdsed train` at random points, then `--resume`: the final weights must be byte-identical to an
uninterrupted run's, every time.

    python benchmarks/bench_resume.py --kills 10 [--epochs 4 --batch-size 16 --set data.val_fraction=0]

One uninterrupted run is the reference (its prepared store is reused by every other run). Each trial starts a
fresh run folder and kills it -9 at a random moment, or the moment a checkpoint's temporary file appears
(mid-write), then runs `--resume` (plain again when no checkpoint was written yet), killing that too while the
trial has kills left, until a run finishes. Prints a table and writes bench-out/resume.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_markdown, save_json  # noqa: E402

from birdsed.data.synth import SynthConfig, synthesize  # noqa: E402


def weights_digest(run: Path) -> str:
    """sha256 of the run's model weights file."""
    return hashlib.sha256((run / "model" / "weights.safetensors").read_bytes()).hexdigest()


def trained_steps(run: Path) -> int:
    return int(json.loads((run / "model" / "model.json").read_text())["train"]["steps"])


def train_argv(data: Path, run: Path, args: argparse.Namespace) -> list[str]:
    argv = [sys.executable, "-m", "birdsed", "train", "--data", str(data), "--config", args.config, "--out", str(run)]
    argv += ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--quiet"]
    if args.max_steps:
        argv += ["--max-steps", str(args.max_steps)]
    return argv + [x for kv in args.set for x in ("--set", kv)]


def mid_write(run: Path) -> bool:
    """A checkpoint is being written (its temporary file is there)."""
    folder = run / "checkpoints"
    return folder.is_dir() and any(".tmp" in p.name for p in folder.iterdir())


def run_until(argv: list[str], kill_at: float | None, on_write: bool, run: Path) -> tuple[str, float]:
    """Run argv; kill -9 after kill_at seconds or at the first checkpoint write (on_write). Returns (what
    happened, seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    while proc.poll() is None:
        elapsed = time.perf_counter() - t0
        if (on_write and mid_write(run)) or (not on_write and kill_at is not None and elapsed >= kill_at):
            os.killpg(proc.pid, signal.SIGKILL)  # the loader's workers too, as a machine failure would
            proc.wait()
            return ("killed mid-write" if on_write else "killed"), elapsed
        time.sleep(0.002 if on_write else 0.02)
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"train exited {proc.returncode}: {err[-2000:]}")
    return "finished", time.perf_counter() - t0


def trial(i: int, store: Path, root: Path, ref_s: float, kills: int, args, rng: random.Random) -> dict:
    run = root / f"trial{i:02d}"
    steps, killed = [], 0
    while True:
        resume = (run / "checkpoints" / "last.ckpt").is_file()
        argv = train_argv(store, run, args) + (["--resume"] if resume else [])
        if killed < kills:
            on_write = rng.random() < args.mid_write_share
            what, s = run_until(argv, rng.uniform(0.1, 0.8) * ref_s, on_write, run)
            killed += what != "finished"
        else:
            what, s = run_until(argv, None, False, run)
        epoch = _last_epoch(run)
        steps.append(f"{what} at {s:.1f} s{' (resumed)' if resume else ''}, last.ckpt epoch {epoch}")
        if what == "finished":
            return {"trial": i, "kills": killed, "path": "; ".join(steps), "digest": weights_digest(run),
                    "steps": trained_steps(run)}  # fmt: skip


def _last_epoch(run: Path) -> str:
    last = run / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return "-"
    import torch

    return str(torch.load(last, map_location="cpu", weights_only=True).get("epoch"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=10, help="kills in all, spread over the trials")
    p.add_argument("--kills-per-trial", type=int, default=2)
    p.add_argument("--mid-write-share", type=float, default=0.3, help="share of kills timed at a checkpoint write")
    p.add_argument("--config", default="small")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--set", action="append", default=["data.balance_min=4", "data.val_windows=1"])
    p.add_argument("--seed", type=int, default=0, help="the seed of the kill moments")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--out", type=Path, default=Path("bench-out/resume.json"))
    args = p.parse_args()
    root = args.work or Path(tempfile.mkdtemp(prefix="bench-resume-"))
    data = synthesize(
        root / "synth",
        SynthConfig(species=3, clips_per_species=4, soundscapes=2, soundscape_s=30.0, min_clip_s=3.0, max_clip_s=8.0),
        quiet=True,
    )
    ref = root / "reference"
    _, ref_s = run_until(train_argv(data, ref, args), None, False, ref)
    store, reference = ref / "store", weights_digest(ref)
    again = root / "again"
    _, _ = run_until(train_argv(store, again, args), None, False, again)
    rows = [{"trial": "again", "kills": 0, "path": "uninterrupted", "same": weights_digest(again) == reference,
             "steps": trained_steps(again)}]  # fmt: skip
    rng, left, i = random.Random(args.seed), args.kills, 0
    while left > 0 and i < 3 * args.kills:  # a run may finish before its kill moment: trials until enough kills
        r = trial(i, store, root, ref_s, min(left, args.kills_per_trial), args, rng)
        r["same"] = r.pop("digest") == reference
        rows.append(r)
        print(f"trial {i}: {r['kills']} kill(s), {'identical' if r['same'] else 'DIFFERENT'}: {r['path']}", flush=True)
        left -= r["kills"]
        i += 1
    print_markdown(rows, {"trial": "{trial}", "kills": "{kills}", "what happened": "{path}", "steps": "{steps}",
                          "weights identical": "{same}"})  # fmt: skip
    kills = sum(r["kills"] for r in rows)
    same = all(r["same"] for r in rows)
    print(f"\n{kills} kills, reference {trained_steps(ref)} steps in {ref_s:.1f} s: all identical: {same}")
    summary = {"reference_s": ref_s, "reference_steps": trained_steps(ref), "kills": kills, "all_identical": same}
    save_json(args.out, {"machine": machine(), "args": vars(args), **summary, "rows": rows})
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()

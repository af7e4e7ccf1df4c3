"""`prepare` throughput: audio seconds decoded and resampled per wall second, all cores.

python benchmarks/bench_prepare.py            # NIPS4B (550 FLAC files) and a synthetic set (mixed formats)
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import NIPS4B, machine, print_markdown, save_json  # noqa: E402

from birdsed.data.manifest import read_dataset  # noqa: E402
from birdsed.data.store import prepare  # noqa: E402
from birdsed.data.synth import SynthConfig, synthesize  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out/prepare"))
    ap.add_argument("--workers", type=int, default=None)
    a = ap.parse_args()
    synth = a.out / "synth"
    if not (synth / "train.csv").is_file():
        synthesize(synth, SynthConfig(species=6, clips_per_species=20, soundscapes=1, soundscape_s=10), quiet=True)
    rows = []
    for name, data in (("nips4b", NIPS4B), ("synth", synth)):
        if not data.exists():
            print(f"skipping {name}: {data} not found")
            continue
        store = a.out / f"store_{name}"
        shutil.rmtree(store, ignore_errors=True)
        m = read_dataset(data)
        r = prepare(m, store, workers=a.workers, quiet=True)
        again = prepare(m, store, workers=a.workers, quiet=True)
        row = {
            "data": name,
            "recordings": len(m),
            "audio_h": round(r.audio_s / 3600, 3),
            "wall_s": round(r.wall_s, 2),
            "realtime_x": round(r.audio_s / r.wall_s, 0),
            "resume_wall_s": round(again.wall_s, 2),
            "formats": sorted({Path(p).suffix for p in m.table["path"]}),
        }
        print(row, flush=True)
        rows.append(row)
    for r in rows:
        r["formats_joined"] = ", ".join(r["formats"])
    print_markdown(
        rows,
        {
            "data": "{data} ({formats_joined})",
            "recordings": "{recordings}",
            "audio h": "{audio_h:.2f}",
            "wall s": "{wall_s:.1f}",
            "x real time": "{realtime_x:.0f}",
            "re-run (resume) s": "{resume_wall_s:.2f}",
        },
    )
    save_json(a.out / "prepare.json", {"machine": machine(), "results": rows})


if __name__ == "__main__":
    main()

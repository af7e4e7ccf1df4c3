"""Start-up (issue #24): what a whole `birdsed predict` process costs on one 10 s file, beside its peer `import torch`.

    python benchmarks/bench_startup.py --repeats 5

Each row is a fresh process, timed from outside (the median of --repeats): the peers (`python -c pass`,
`import torch`), then what each verb imports (the modules its handler loads), then `birdsed predict` on one 10 s
WAV as a whole process, and `birdsed predict --help`. "above torch" is a row's time less `import torch`'s, the
target being at most 1 s for predict's imports. Then `python -X importtime` of predict's imports: the heaviest
packages by their own cumulative time.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
from bench_predict import random_model  # noqa: E402
from common import machine, print_markdown, save_json  # noqa: E402

# what each verb's handler imports (cli/<verb>.py imports these inside the handler)
VERB_IMPORTS = {
    "predict": "import birdsed.infer.predict",
    "evaluate": "import birdsed.evaluate.score",
    "report": "import birdsed.evaluate.report",
    "train": "import birdsed.train.run",
}
HEAVY = ("torch", "timm", "torchvision", "lightning", "sklearn", "matplotlib", "librosa", "scipy", "pandas", "pyarrow",
         "onnx", "onnxruntime", "dask", "distributed", "safetensors", "rich", "yaml", "soundfile", "soxr", "numba",
         "birdsed")  # fmt: skip


def wall(cmd, repeats: int) -> float:
    """Median wall time of a fresh process; cmd: an argv, or a function of the repeat's index giving one."""
    times = []
    for i in range(repeats):
        argv = cmd(i) if callable(cmd) else cmd
        t = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def imported(code: str) -> list[str]:
    """The heavy top-level packages a statement loads."""
    probe = f"import sys; {code}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    return [m for m in out if m in HEAVY]


def importtime(code: str) -> list[tuple[str, float]]:
    """Cumulative import time of each top-level package `code` loads (python -X importtime), heaviest first."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True).stderr
    top: dict[str, float] = {}
    for line in err.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (p.strip() for p in line[len("import time:") :].split("|"))
        if not cumulative.isdigit():
            continue
        if name == name.lstrip() and "." not in name.strip():  # a top-level import (not nested under another)
            top[name.strip()] = top.get(name.strip(), 0.0) + int(cumulative) / 1e6
    return sorted(top.items(), key=lambda kv: -kv[1])


def export_program(model_dir: Path, out: Path) -> Path:
    """The model's network (a batch of two 5 s waveforms in, its outputs out) saved as a torch.export program."""
    import torch

    from birdsed.model.export import OutputsAsTuple
    from birdsed.model.modeldir import load_model_dir

    if not out.is_file():
        spec = load_model_dir(model_dir)[0].onnx_export()
        net = OutputsAsTuple(spec.module, spec.outputs).eval()
        example = torch.randn(2, spec.n_samples) * 0.1
        program = torch.export.export(net, (example,))  # a fixed batch: what is timed is the load
        torch.export.save(program, str(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out/startup"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", default="small")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    model = random_model(a.model, a.out, n_classes=20)
    wav = a.out / "ten_seconds.wav"
    rng = np.random.default_rng(0)
    sf.write(str(wav), (rng.standard_normal(320_000) * 0.01).astype(np.float32), 32_000)
    py = sys.executable
    torch_s = wall([py, "-c", "import torch"], a.repeats)
    rows = [{"process": "python -c pass", "wall_s": wall([py, "-c", "pass"], a.repeats)}]
    rows.append({"process": "python -c 'import torch' (peer)", "wall_s": torch_s})
    # the floor of any process that builds a timm network (timm imports torchvision, which imports torch._dynamo)
    rows.append({"process": "python -c 'import torch, timm' (peer)", "wall_s": wall([py, "-c", "import torch, timm"],
                                                                                   a.repeats)})  # fmt: skip
    for verb, code in VERB_IMPORTS.items():
        rows.append({"process": f"{verb}'s imports: {code}", "wall_s": wall([py, "-c", code], a.repeats),
                     "heavy_packages": " ".join(imported(code))})  # fmt: skip
    stamp = time.strftime("%Y%m%d%H%M%S")
    predict = lambda i: [py, "-m", "birdsed", "predict", "--model", str(model), str(wav), "--out",  # noqa: E731
                         str(a.out / f"pred_{stamp}_{i}"), "--quiet"]  # fmt: skip
    rows.append({"process": "birdsed predict, one 10 s file (whole process)", "wall_s": wall(predict, a.repeats)})
    onnx = model / "model.onnx"
    if not onnx.is_file():
        subprocess.run([py, "-m", "birdsed", "export", "--model", str(model), "--onnx", str(onnx)], check=True,
                       capture_output=True)  # fmt: skip
    rows.append({"process": "birdsed predict --backend onnx, the same (whole process)",
                 "wall_s": wall(lambda i: [*predict(i)[:-2], str(a.out / f"onnx_{stamp}_{i}"), "--quiet", "--backend",
                                           "onnx"], a.repeats)})  # fmt: skip
    rows.append({"process": "birdsed predict --help", "wall_s": wall([py, "-m", "birdsed", "predict", "--help"], 3)})
    # peer: the network as a torch.export program, loaded without timm (an alternative to building it, not taken)
    program = export_program(model, a.out / "network.pt2")
    load = f"import torch; torch.export.load({str(program)!r}).module()"
    rows.append({"process": "peer: torch.export.load of the same network", "wall_s": wall([py, "-c", load], a.repeats),
                 "heavy_packages": " ".join(imported(load))})  # fmt: skip
    for r in rows:
        r["above_torch_s"] = round(r["wall_s"] - torch_s, 2)
        r["wall_s"] = round(r["wall_s"], 2)
    print_markdown(rows, {"process": "{process}", "wall s": "{wall_s:.2f}", "above torch s": "{above_torch_s:+.2f}"})
    for r in rows:
        if "heavy_packages" in r:
            print(f"{r['process']}: {r['heavy_packages']}")
    heavy = [{"package": name, "import_s": round(s, 2)} for name, s in importtime(VERB_IMPORTS["predict"])]
    print_markdown(heavy[:12], {"package": "{package}", "cumulative import s": "{import_s:.2f}"})
    save_json(a.out / "startup.json", {"machine": machine(), "repeats": a.repeats, "rows": rows, "importtime": heavy})


if __name__ == "__main__":
    main()

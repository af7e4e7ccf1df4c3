"""The embedding index: usearch against faiss on BirdNET embeddings, at archive sizes: build time, size on disk, peak
memory, query latency and recall@10 against exact search.

    python benchmarks/bench_search_index.py --db nips4b.db --sizes 100000 1000000 --libs usearch faiss-hnsw \
        faiss-hnsw-sq8 --out bench-out/search_index

--db: an embedding DB of real BirdNET embeddings (birdsed embed --model BIRDNET ../shared/data/nips4b/audio
--hop-s 1 --out nips4b.db: 1,684 windows). More windows are made from them: each a random convex mix of two real
windows (weight 0.7-1 on the first) plus Gaussian noise of 0.05 per-dimension standard deviations, so that the set has
the real embeddings' spread, with no two windows equal. Queries: --queries other real windows, perturbed the same way.
Exact top-10 (cosine) is computed block by block; recall@10 = |ANN top-10 & exact top-10| / 10.

Each (library, size) runs in its own process (peak RSS is that process's, vectors read block by block, never mapped).
Index settings: HNSW, 16 links, 128 candidates while adding and while searching, for every library; usearch keeps
f16 vectors (as the DB does), faiss-hnsw f32 (IndexHNSWFlat), faiss-hnsw-sq8 8-bit scalar-quantised ones.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from common import machine, peak_rss_mb, print_markdown, save_json  # noqa: E402

BLOCK = 50_000
M, EF_ADD, EF_SEARCH, K = 16, 128, 128, 10


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def make_windows(real: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n windows made from the real ones (module docstring), float32 (n, D)."""
    rng = np.random.default_rng(seed)
    sd = real.std(axis=0)
    i, j = rng.integers(0, len(real), n), rng.integers(0, len(real), n)
    w = rng.uniform(0.7, 1.0, (n, 1)).astype(np.float32)
    return (w * real[i] + (1 - w) * real[j] + 0.05 * sd * rng.standard_normal((n, real.shape[1]))).astype(np.float32)


def write_set(real: np.ndarray, n: int, path: Path) -> None:
    with open(path, "wb") as f:
        for a in range(0, n, BLOCK):
            f.write(make_windows(real, min(BLOCK, n - a), seed=a).astype(np.float16).tobytes())


def read_blocks(path: Path, n: int, d: int):
    for a in range(0, n, BLOCK):
        b = min(n, a + BLOCK)
        x = np.fromfile(path, np.float16, count=(b - a) * d, offset=a * d * 2).reshape(-1, d)
        yield a, x.astype(np.float32)


def exact(path: Path, n: int, d: int, queries: np.ndarray) -> np.ndarray:
    q = unit(queries)
    best_s = np.full((len(q), 0), -np.inf)
    best_i = np.zeros((len(q), 0), np.int64)
    for a, x in read_blocks(path, n, d):
        s = q @ unit(x).T
        best_s = np.concatenate([best_s, s], 1)
        best_i = np.concatenate([best_i, np.broadcast_to(np.arange(a, a + len(x)), s.shape)], 1)
        top = np.argsort(-best_s, 1)[:, :K]
        best_s, best_i = np.take_along_axis(best_s, top, 1), np.take_along_axis(best_i, top, 1)
    return best_i


def one(lib: str, path: Path, n: int, d: int, queries: np.ndarray, truth: np.ndarray, threads: int) -> dict:
    """Build, save, reload and query one index in this process."""
    index_path = path.with_suffix(f".{lib}")
    t0 = time.perf_counter()
    if lib == "usearch":
        from usearch.index import Index

        index = Index(
            ndim=d, metric="cos", dtype="f16", connectivity=M, expansion_add=EF_ADD, expansion_search=EF_SEARCH
        )
        for a, x in read_blocks(path, n, d):
            index.add(np.arange(a, a + len(x), dtype=np.uint64), x, threads=threads)
        build_s = time.perf_counter() - t0
        index.save(str(index_path))
        del index
        index = Index(ndim=d, metric="cos", dtype="f16", expansion_search=EF_SEARCH)
        index.view(str(index_path))

        def search(q):
            return np.asarray(index.search(q, K).keys).reshape(len(q), -1)
    else:
        import faiss

        faiss.omp_set_num_threads(threads or os.cpu_count())
        if lib == "faiss-hnsw":
            index = faiss.IndexHNSWFlat(d, M, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, M, faiss.METRIC_INNER_PRODUCT)
            index.train(unit(next(read_blocks(path, n, d))[1]))
        index.hnsw.efConstruction = EF_ADD
        for _, x in read_blocks(path, n, d):
            index.add(unit(x))
        build_s = time.perf_counter() - t0
        faiss.write_index(index, str(index_path))
        del index
        index = faiss.read_index(str(index_path), faiss.IO_FLAG_MMAP if lib == "faiss-hnsw" else 0)
        index.hnsw.efSearch = EF_SEARCH

        def search(q):
            return index.search(unit(q), K)[1]

    found = search(queries)
    recall = float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)]))
    lat = []
    for q in queries:
        t = time.perf_counter()
        search(q[None, :])
        lat.append(time.perf_counter() - t)
    size = index_path.stat().st_size
    index_path.unlink()
    return {
        "lib": lib,
        "n": n,
        "build_s": round(build_s, 1),
        "size_mb": round(size / 2**20),
        "peak_rss_mb": round(peak_rss_mb()),
        "query_ms_p50": round(1000 * float(np.median(lat)), 2),
        "query_ms_p95": round(1000 * float(np.percentile(lat, 95)), 2),
        "recall_at_10": round(recall, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--libs", nargs="+", default=["usearch", "faiss-hnsw", "faiss-hnsw-sq8"])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--threads", type=int, default=0, help="0: every core")
    ap.add_argument("--work", type=Path, help="folder for the made windows (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=Path("bench-out/search_index"))
    ap.add_argument("--one", nargs=2, metavar=("LIB", "N"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    from birdsed.search import open_db

    db = open_db(a.db)
    real = np.concatenate([x for _, x in db.blocks()])
    rng = np.random.default_rng(1)
    held = rng.permutation(len(real))
    base, query_src = real[held[a.queries :]], real[held[: a.queries]]
    queries = make_windows(query_src, a.queries, seed=-1 % 2**32)
    work = a.work or Path(tempfile.mkdtemp(prefix="bench_search_index-"))
    work.mkdir(parents=True, exist_ok=True)
    d = real.shape[1]
    if a.one:
        lib, n = a.one[0], int(a.one[1])
        truth = np.load(work / f"truth-{n}.npy")
        print(json.dumps(one(lib, work / f"set-{n}.f16", n, d, queries, truth, a.threads)))
        return
    rows = []
    for n in a.sizes:
        path = work / f"set-{n}.f16"
        t0 = time.perf_counter()
        write_set(base, n, path)
        np.save(work / f"truth-{n}.npy", exact(path, n, d, queries))
        print(f"{n} windows made and searched exactly in {time.perf_counter() - t0:.0f} s", flush=True)
        for lib in a.libs:
            cmd = [
                sys.executable,
                __file__,
                "--db",
                str(a.db),
                "--queries",
                str(a.queries),
                "--threads",
                str(a.threads),
                "--work",
                str(work),
                "--one",
                lib,
                str(n),
            ]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                print(res.stderr[-2000:], flush=True)
                continue
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
        path.unlink()
    save_json(a.out / "results.json", {"machine": machine(), "rows": rows, "real_windows": len(real), "dim": d})
    print_markdown(
        rows,
        {
            "library": "{lib}",
            "windows": "{n:,}",
            "build s": "{build_s}",
            "size MB": "{size_mb}",
            "peak RSS MB": "{peak_rss_mb}",
            "query ms p50": "{query_ms_p50}",
            "query ms p95": "{query_ms_p95}",
            "recall@10": "{recall_at_10}",
        },
    )


if __name__ == "__main__":
    main()

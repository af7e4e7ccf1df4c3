"""`birdsed embed` (an archive's window embeddings into a DB) and `birdsed search` (the windows nearest examples)."""

from __future__ import annotations

import argparse
from pathlib import Path

from birdsed.cli.registry import batch_status, console, goes_on, verb
from birdsed.cli.values import cores_cap, count
from birdsed.cli.windowing import add_window_options, window_arguments
from birdsed.config import DEVICES, PRECISIONS
from birdsed.progress import audio_pace

MAX_K = 100_000  # search.query.MAX_K (not imported here: --help loads no numpy)


def _add_embed(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", type=Path, required=True, help="a model directory: BirdNET, a BirdNET head or an SED model"
    )
    p.add_argument("inputs", nargs="+", help="audio files and folders (recursive)")
    p.add_argument("--out", type=Path, required=True, metavar="DB", help="the DB folder (new, or one to add to)")
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="embed the I-th of N duration-balanced shards of the inputs into the same DB (job arrays); each "
        "commits its windows when done",
    )
    p.add_argument(
        "--cluster",
        metavar="SPEC",
        help="embed on a dask.distributed cluster: local:N, tcp://HOST:PORT or FILE.yaml (as predict --cluster; "
        "pip install 'birdsed[cluster]')",
    )
    add_window_options(p)
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="auto: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--workers", type=count(0, cores_cap()), help=f"decoding processes, 0 to {cores_cap()}")
    p.add_argument("--quiet", action="store_true")


@verb(
    "embed",
    "the embedding of every window of every recording into a DB (f16 vectors, file, start, end; an ANN index)",
    "birdsed embed --model birdnet_model archive/ --out archive.db      # a re-run resumes, or adds new recordings",
    _add_embed,
)
def cmd_embed(a: argparse.Namespace) -> int:
    from birdsed.search.embed import run_embed

    with goes_on(lambda: f"What was embedded is kept in {a.out}; the same command goes on from it."):
        s = run_embed(
            a.model,
            a.inputs,
            a.out,
            workers=a.workers,
            **window_arguments(a),
            quiet=a.quiet,
            shard=a.shard,
            precision=a.precision,
            cluster=a.cluster,
        )
    console.print(
        f"{s.n_files} recording(s) ({s.n_done_before} in the DB before); {audio_pace(s.audio_s, s.wall_s)}; "
        f"{s.n_windows_added} window(s) added to {s.out}"
    )
    return batch_status(len(s.errors), s.errors_csv)


def _add_search(p: argparse.ArgumentParser) -> None:
    p.add_argument("db", type=Path, metavar="DB", help="an embedding DB (birdsed embed --out)")
    p.add_argument(
        "--query",
        action="append",
        default=[],
        metavar="CLIP[:START-END]",
        help="an example: a recording, or the stretch START-END (s) of it, embedded with the DB's model (repeat: "
        "several examples combine)",
    )
    p.add_argument(
        "--query-window",
        action="append",
        default=[],
        metavar="FILE:START",
        help="an example already in the DB: the window of FILE starting nearest START s",
    )
    p.add_argument(
        "--not",
        dest="negatives",
        action="append",
        default=[],
        metavar="CLIP[:START-END]",
        help="a negative example: windows like it rank lower (repeat)",
    )
    p.add_argument(
        "--not-window", action="append", default=[], metavar="FILE:START", help="a negative window of the DB"
    )
    p.add_argument("--k", type=count(1, MAX_K), default=100, help=f"windows to return, 1 to {MAX_K} (default 100)")
    p.add_argument("--out", type=Path, help="a folder for results.csv and the review queue (birdsed review OUT)")
    p.add_argument("--label", default="query", help="the label the review queue gives the windows (default: query)")
    p.add_argument("--model", type=Path, help="the model to embed query clips with (default: the DB's)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--show", type=count(0, MAX_K), default=20, help="rows printed (default 20)")


@verb(
    "search",
    "the windows of an embedding DB nearest example clips: a table, and a queue for `birdsed review`",
    "birdsed search archive.db --query call.wav:3.2-5 --query other.wav --not noise.wav --k 200 --out found",
    _add_search,
)
def cmd_search(a: argparse.Namespace) -> int:
    from birdsed.search.db import open_db
    from birdsed.search.query import parse_clip, parse_window, search, write_results

    positives = [parse_clip(q) for q in a.query] + [parse_window(q) for q in a.query_window]
    negatives = [parse_clip(q) for q in a.negatives] + [parse_window(q) for q in a.not_window]
    db = open_db(a.db)
    results = search(db, positives, negatives, a.k, a.model, a.device)
    from rich.table import Table

    table = Table(title=f"nearest {len(results)} of {db.n} windows")
    for name in ("rank", "file", "start_s", "end_s", "similarity"):
        table.add_column(name, overflow="fold")  # a long path stays whole, over several lines
    for r in results.head(a.show).itertuples():
        table.add_row(str(r.rank), r.file, f"{r.start_s:g}", f"{r.end_s:g}", f"{r.similarity:.3f}")
    console.print(table)
    if a.out:
        write_results(results, a.out, db, a.label)
        console.print(f"results in {a.out / 'results.csv'}; review them: birdsed review {a.out}")
    return 0

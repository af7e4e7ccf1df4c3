"""`birdsed learn DB --verdicts V --out M`: one round of active learning on an embedding DB (search/learn.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from birdsed.cli.registry import batch_status, console, verb
from birdsed.cli.values import count, number

CLASSIFIERS = ("linear", "head")  # search/classifier.py's, without importing torch for --help
SELECTIONS = ("uncertain", "top", "random")  # search/propose.py's


def _add_learn(p: argparse.ArgumentParser) -> None:
    p.add_argument("db", type=Path, metavar="DB", help="an embedding DB (`birdsed embed --out DB`)")
    p.add_argument(
        "--verdicts",
        type=Path,
        action="append",
        default=[],
        metavar="V",
        help="verdicts: a CSV (file,start_s,end_s,label,verdict[,other_label,reviewer,time]; `birdsed review "
        "--export` writes one), a verdicts.sqlite or a reviewed folder; repeatable; remembered by later rounds, "
        "which also read M's own review store (`birdsed review M`)",
    )
    p.add_argument("--out", type=Path, required=True, metavar="M", help="the learn folder (its model in M/model)")
    p.add_argument("--classifier", choices=CLASSIFIERS, help="linear (default) or birdsed's embedding head")
    p.add_argument(
        "--select",
        choices=SELECTIONS,
        help="the next clips: uncertain (default: scores near 0.5, spread out), top (highest scores), random",
    )
    p.add_argument("--n", type=count(1, 10_000), help="clips proposed per class (default 10)")
    p.add_argument(
        "--background", type=count(0, 1_000_000), help="random DB windows taken as weak negatives (default 1000)"
    )
    p.add_argument(
        "--min-overlap",
        type=number(0, 1, lo_open=True),
        help="share of the shorter of a verdict's clip and a window they must overlap by to match (default 0.5)",
    )
    p.add_argument("--seed", type=count(0, 2**31 - 1), help="seed of the background draw and random selection")


@verb(
    "learn",
    "a classifier from verdicts on an embedding DB: every window scored, the next clips to review proposed",
    "birdsed learn db --verdicts seed.csv --out m   # then: birdsed review m; birdsed learn db --out m",
    _add_learn,
)
def cmd_learn(a: argparse.Namespace) -> int:
    from birdsed.search.learn import UNMATCHED, learn_round, resolve_spec

    spec = resolve_spec(
        a.out, classifier=a.classifier, select=a.select, n=a.n, background=a.background, min_overlap=a.min_overlap,
        seed=a.seed,
    )  # fmt: skip
    r = learn_round(a.db, a.verdicts, a.out, spec)
    if r.up_to_date:
        console.print(f"round {r.round} is up to date (no new verdicts): {a.out / 'queue.csv'} stands")
        return batch_status(len(r.unmatched), a.out / UNMATCHED, "verdict(s) match no DB window")
    console.print(f"round {r.round}: {spec.classifier} classifier on {int(r.counts['windows'].sum())} verdict(s) "
                  f"of {len(r.classes)} class(es), in {r.seconds:.1f} s")  # fmt: skip
    for row in r.counts.to_dict("records"):
        console.print(f"  {row['label']}: {row['yes']} yes, {row['no']} no")
    for note in r.notes:
        console.print(note, style="yellow")
    if r.model_dir is not None:
        console.print(f"model: {r.model_dir} (birdsed predict --model {r.model_dir} ...)")
    console.print(f"next: {len(r.queue)} clip(s) in {a.out / 'queue.csv'}: birdsed review {a.out}")
    return batch_status(len(r.unmatched), a.out / UNMATCHED, "verdict(s) match no DB window")

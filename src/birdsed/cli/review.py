"""Verbs of the listen-verify-calibrate loop: review (the web page, verdict import / export) and calibrate."""

from __future__ import annotations

import argparse
from pathlib import Path

from birdsed.cli.registry import console, verb
from birdsed.cli.values import count
from birdsed.config import OUTPUT_KINDS


def _add_review(p: argparse.ArgumentParser) -> None:
    p.add_argument("pred", type=Path, metavar="PRED", help="a predict --out folder (its scores.parquet and run.json)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=count(1, 65535), default=8765, help="port to serve on (default 8765)")
    p.add_argument("--no-browser", action="store_true", help="do not open the page in a browser")
    p.add_argument(
        "--output", choices=OUTPUT_KINDS, help="output kind whose scores are reviewed (default: the model's)"
    )
    p.add_argument(
        "--import",
        dest="import_csv",
        type=Path,
        metavar="F.csv",
        help="add the verdicts of a CSV (file,start_s,end_s,label,verdict[,other_label,reviewer,time]) "
        "to PRED's store, and stop; rows naming files or labels PRED lacks are listed, not added",
    )
    p.add_argument(
        "--export",
        dest="export_csv",
        type=Path,
        metavar="F.csv",
        help="write PRED's verdicts as CSV (with each clip's score), and stop",
    )


@verb(
    "review",
    "a local web page to listen to detections and verify them; verdicts kept in PRED/review/verdicts.sqlite",
    "birdsed review preds            # then y / n / u / o (another species) / s (skip) / z (undo)",
    _add_review,
)
def cmd_review(a: argparse.Namespace) -> int:

    if a.import_csv is not None or a.export_csv is not None:
        return _exchange(a)
    from birdsed.review.app import serve

    serve(a.pred, a.host, a.port, not a.no_browser, a.output, say=lambda s: console.print(s))
    return 0


def _exchange(a: argparse.Namespace) -> int:
    """--import and --export: verdicts in and out of PRED's store."""
    from birdsed.cli.registry import batch_status
    from birdsed.review import verdicts as vs
    from birdsed.review.queue import Predictions

    status = 0
    if a.import_csv is not None:
        preds = Predictions.open(a.pred, a.output)
        table = vs.read_verdict_table(a.import_csv)
        good, bad = vs.check_known(table, preds.files, preds.classes)
        missing = good["score"].isna()
        good.loc[missing, "score"] = [
            preds.score_of(f, s, lab)
            for f, s, lab in zip(good["file"][missing], good["start_s"][missing], good["label"][missing])
        ]
        with vs.VerdictStore(vs.store_path(a.pred)) as store:
            n = store.put(vs.verdicts_of(good))
        console.print(f"{n} verdict(s) from {a.import_csv} added to {vs.store_path(a.pred)}")
        if len(bad):
            report = vs.store_path(a.pred).parent / "import_skipped.csv"
            from birdsed.fsutil import atomic_path

            with atomic_path(report) as tmp:
                bad.to_csv(tmp, index=False)
            for r in bad.head(10).to_dict("records"):
                console.print(
                    f"  not added: {r['file']} {r['start_s']:g} s {r['label']}: {r['reason']}", style="yellow"
                )
            status = batch_status(len(bad), report, "verdict(s) not added")
    if a.export_csv is not None:
        table = vs.load_verdicts(a.pred)
        vs.write_verdict_table(table, a.export_csv)
        console.print(f"{len(table)} verdict(s) written to {a.export_csv}")
    return status

"""Verbs of the listen-verify-calibrate loop: review (the web page, verdict import / export) and calibrate."""

from __future__ import annotations

import argparse
from pathlib import Path

from birdsed.cli.registry import console, verb
from birdsed.cli.values import count, number
from birdsed.config import OUTPUT_KINDS
from birdsed.review.links import REVIEW_PORT


def _add_review(p: argparse.ArgumentParser) -> None:
    p.add_argument("pred", type=Path, metavar="PRED", help="a predict --out folder (its scores.parquet and run.json)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument(
        "--port", type=count(1, 65535), default=REVIEW_PORT, help=f"port to serve on (default {REVIEW_PORT})"
    )
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
    p.add_argument(
        "--export-labels",
        dest="export_labels",
        type=Path,
        metavar="DATA",
        help="write the verified clips as a data set train reads (DATA/labels.csv + DATA/audio/): yes and another "
        "species are labels, clips with only no are negatives, unsure is left out; and stop",
    )


@verb(
    "review",
    "a local web page to listen to detections and verify them; verdicts kept in PRED/review/verdicts.sqlite",
    "birdsed review preds            # then y / n / u / o (another species) / s (skip) / z (undo)",
    _add_review,
)
def cmd_review(a: argparse.Namespace) -> int:

    if a.import_csv is not None or a.export_csv is not None or a.export_labels is not None:
        return _exchange(a)
    import importlib.util

    from birdsed.errors import ReviewError

    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise ReviewError(f"birdsed review serves its page with {' and '.join(missing)}: pip install 'birdsed[review]'")
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
        table["file"], several = vs.predicted_files(table["file"], preds)
        good, bad = vs.check_known(table, preds.files, preds.classes, preds.ends_s, several)
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
    if a.export_labels is not None:
        status = max(status, _export_labels(a.pred, a.export_labels))
    return status


def _export_labels(pred: Path, data: Path) -> int:
    """--export-labels: PRED's verified clips as a labels.csv data set; clips left out listed in DATA/skipped.csv."""
    from birdsed.cli.registry import batch_status
    from birdsed.fsutil import atomic_path
    from birdsed.review.labels import export_labels
    from birdsed.review.verdicts import load_verdicts

    done = export_labels(load_verdicts(pred), data)
    console.print(
        f"{done.clips} verified clip(s) written to {data} ({done.positives} with a species, {done.negatives} "
        f"negative): birdsed train --data {data} --config birdnet --out RUN"
    )
    report = data / "skipped.csv"
    if len(done.skipped):
        with atomic_path(report) as tmp:
            done.skipped.to_csv(tmp, index=False)
        for r in done.skipped.head(10).itertuples(index=False):
            console.print(f"  not exported: {r.file} {r.start_s:g} s: {r.reason}", style="yellow")
    else:
        report.unlink(missing_ok=True)
    return batch_status(len(done.skipped), report, "verified clip(s) not exported")


def _add_calibrate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, metavar="M", help="the model directory the scores came from")
    p.add_argument(
        "--verdicts",
        type=Path,
        required=True,
        metavar="V",
        help="a predict folder with verdicts (PRED/review/verdicts.sqlite), a verdicts.sqlite, or a CSV "
        "of the verdict table with a score column (review --export writes one)",
    )
    p.add_argument(
        "--precision", type=number(0.5, 0.999), default=0.9, help="the precision the thresholds reach (default 0.9)"
    )
    p.add_argument(
        "--min-verdicts",
        type=count(2, 100000),
        default=10,
        help="a species with fewer yes + no verdicts gets no threshold (listed; default 10)",
    )
    p.add_argument("--output", choices=OUTPUT_KINDS, help="output kind the thresholds are for (default: the model's)")


@verb(
    "calibrate",
    "per species: the probability a detection is right, from verdicts; thresholds for a chosen precision, stored in "
    "the model",
    "birdsed calibrate --model runs/small/model --verdicts preds --precision 0.95",
    _add_calibrate,
)
def cmd_calibrate(a: argparse.Namespace) -> int:
    from rich.table import Table

    from birdsed.evaluate.calibrate import calibrate, store_calibration
    from birdsed.model.meta import read_model_meta
    from birdsed.review.verdicts import load_verdicts

    meta = read_model_meta(a.model)
    output = a.output or meta.default_output
    cal = calibrate(load_verdicts(a.verdicts), meta.classes, a.precision, a.min_verdicts)
    shown = Table(title=f"calibration at precision {a.precision:g} ({output}; prior strength lambda {cal.lam:.3g})")
    for c in ("species", "verdicts", "yes", "threshold", "precision", "95 % CI", "yes above"):
        shown.add_column(c, justify="left" if c == "species" else "right", overflow="fold")
    for s in cal.calibrated:
        shown.add_row(
            s.label,
            str(s.n),
            str(s.n_yes),
            f"{s.threshold:.3f}",
            f"{s.precision:.2f}",
            f"{s.precision_lo:.2f}-{s.precision_hi:.2f}",
            f"{s.yes_above}/{s.n_above}" if s.n_above else "none",
        )
    console.print(shown)
    store_calibration(a.model, cal, output)
    console.print(f"{len(cal.calibrated)} species' thresholds and the calibration written to {a.model}/model.json")
    for s in cal.too_few:
        console.print(f"  not calibrated: {s.label}: {s.reason} (its threshold unchanged)", style="yellow")
    if cal.too_few:
        console.print(
            f"{len(cal.too_few)} species not calibrated: review more of their clips, at high scores too "
            "(birdsed review PRED, sampling 'stratified')",
            style="yellow",
        )
        return 1
    return 0

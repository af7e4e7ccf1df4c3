"""Console tables (rich) for evaluation and tuning results."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

from birdsed.cli.registry import table_width
from birdsed.config import OUTPUT_KINDS
from birdsed.evaluate.score import event_table, score_table

console = Console(width=table_width(sys.stdout), markup=False)  # as registry.console


def print_submission_report(rep) -> None:
    console.print(
        Text.assemble(
            "row-wise micro F1 (competition metric): ", (f"{rep.row_f1:.4f}", "bold"), f" over {rep.n_rows} rows"
        )
    )
    console.print(f"species-only micro precision {rep.precision:.4f}, recall {rep.recall:.4f}, F1 {rep.species_f1:.4f}")
    print_unused(rep.unused.lines())
    t = Table("class", "precision", "recall", "f1", "support", "predicted", title="per class")
    for r in rep.per_class.to_dict("records"):
        t.add_row(
            r["class"],
            f"{r['precision']:.3f}",
            f"{r['recall']:.3f}",
            f"{r['f1']:.3f}",
            str(r["support"]),
            str(r["predicted"]),
        )
    console.print(t)


def print_score_report(report: dict) -> None:
    df = score_table(report)
    t = Table(*df.columns, title=f"outputs against truth ({report['n_rows']} rows)")
    for r in df.itertuples(index=False):
        t.add_row(r[0], *(f"{x:.4f}" if i != 0 and i != 2 else f"{x:.2f}" for i, x in enumerate(r[1:])))
    console.print(t)
    if report.get("one_score_per_window"):
        console.print("one score per window: the three output kinds are equal, shown once")
    kinds = list(report["outputs"])
    sweep = Table("threshold", *kinds, title="row-wise F1 against threshold")
    rows = zip(*(report["outputs"][k]["sweep"] for k in kinds))
    for r in rows:
        sweep.add_row(f"{r[0]['threshold']:.2f}", *(f"{x['row_f1']:.4f}" for x in r))
    console.print(sweep)
    if "decision" in report:
        print_per_class(report)
    if "event_recall" in report["outputs"][kinds[0]]:
        df = event_table(report)
        ev = Table(
            *df.columns, title="annotated calls found (a detected row of a label overlapping a call of that label)"
        )
        for r in df.itertuples(index=False):
            ev.add_row(r[0], f"{r[1]:.2f}", f"{r[2]:.4f}", f"{r[3]:.4f}", str(r[4]), str(r[5]))
        console.print(ev)
    print_unused(report["unused_lines"])


def print_per_class(report: dict) -> None:
    """The threshold predict used (evaluate.score.used_decision) and each class's precision, recall and F1 there."""
    d = report["decision"]
    extra = f" ({len(d['per_class'])} class(es) with their own)" if d["per_class"] else ""
    console.print(f"threshold used: {d['output']} {d['threshold']:g}{extra}; from {d['source']}")
    t = Table("class", "threshold", "precision", "recall", "F1", "support", "predicted", title="per class, at it")
    for r in report["per_class"]:
        t.add_row(
            r["class"],
            f"{r['threshold']:.2f}",
            *(f"{r[k]:.3f}" for k in ("precision", "recall", "f1")),
            str(r["support"]),
            str(r["predicted"]),
        )
    console.print(t)


def print_unused(lines: list[str]) -> None:
    """What evaluate did not use (evaluate.Unused.lines); --strict makes any of it an error."""
    for line in lines:
        console.print(f"not used: {line}", style="yellow")


def print_tune_result(res) -> None:
    t = Table(
        "output",
        "before",
        "global threshold",
        "F1 (global)",
        "F1 (per class)",
        "per-class thresholds",
        title="threshold tuning (row-wise F1)",
    )
    for output in OUTPUT_KINDS:
        t.add_row(
            output,
            f"{res.before[output]:.4f}",
            f"{res.thresholds.global_[output]:.3f}",
            f"{res.global_only[output]:.4f}",
            f"{res.after[output]:.4f}",
            str(len(res.thresholds.per_class.get(output, {}))),
        )
    console.print(t)
    console.print(Text.assemble("predict will decide on ", (res.best_output, "bold"), " by default"))

"""`birdsed report`: one self-contained HTML page (pictures embedded, nothing fetched) of what `predict` found.

The decision as run.json records it; a legend of every species drawn (its colour, code, common and scientific
names, detections); with truth, the evaluation and each class's precision, recall and F1 at the threshold used;
activity by hour of day and species by date when the scores carry each row's start time (summary.TIME_COLUMN);
the training curves of a run folder. Then every recording whole (up to --max-minutes), in panels of `page_s`
seconds (evaluate/panels.py): spectrogram in kHz, each species' detections (links to their review cards) and truth
in its lane, its score curve under them. A species has one colour in every report (evaluate/palette.py).

Text from the data (class names, file names) is escaped as HTML, and drawn as written in the matplotlib figures
(mathtext off: a class named `a$\\foo$b` is text, not a formula). The panels drawn are bounded (REPORT_MAX_PICTURES,
pages of at least REPORT_MIN_PAGE_S): past the bound the page says what was not drawn.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from birdsed.config.choices import REPORT_MAX_MINUTES, REPORT_MAX_PICTURES, REPORT_MIN_PAGE_S  # noqa: E402
from birdsed.errors import BirdsedError, ConfigError  # noqa: E402
from birdsed.evaluate.palette import class_colours  # noqa: E402
from birdsed.evaluate.panels import Band, RecordingView, recording_panels, short_name  # noqa: E402
from birdsed.fsutil import write_text_atomic  # noqa: E402
from birdsed.model.meta import read_model_meta  # noqa: E402
from birdsed.model.names import ClassNames, class_names  # noqa: E402
from birdsed.review.links import REVIEW_PORT, review_base  # noqa: E402
from birdsed.rows import DETECTION_COLUMNS, plain_cell  # noqa: E402


def plain_text(draw: Callable[..., str | list[str]]) -> Callable[..., str | list[str]]:
    """Run a figure-drawing function with mathtext and TeX off, so that text from the data is drawn as written."""

    @functools.wraps(draw)
    def wrapped(*args, **kwargs):
        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
            return draw(*args, **kwargs)

    return wrapped


def check_pages(max_recordings: int, page_s: float, max_minutes: float) -> None:
    """Refuse what the command line's types refuse (cli/evaluate.py), for callers of build_report."""
    if not (math.isfinite(page_s) and page_s >= REPORT_MIN_PAGE_S):
        raise ConfigError(f"report page_s (--page-s) must be a finite number >= {REPORT_MIN_PAGE_S:g}, got {page_s}")
    if not (math.isfinite(max_minutes) and 0 < max_minutes <= REPORT_MAX_MINUTES):
        raise ConfigError(
            f"report max_minutes (--max-minutes) must be in (0, {REPORT_MAX_MINUTES:g}], got {max_minutes}"
        )
    if max_recordings < 0:
        raise ConfigError(f"report max_recordings (--max-recordings) must be >= 0, got {max_recordings}")


def read_detections(path: Path) -> pd.DataFrame:
    """predict's detections.csv with file names and labels as written (an empty or "NA" class name stays text); a
    damaged one is a BirdsedError naming it."""
    if not path.is_file():
        return pd.DataFrame(columns=list(DETECTION_COLUMNS))
    try:
        det = pd.read_csv(
            path, dtype={"file": str, "label": str}, keep_default_na=False, na_values={"score": ["", "nan"]}
        )
    except (ValueError, UnicodeDecodeError) as e:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise BirdsedError(f"{path}: not a detections table of predict ({type(e).__name__}); predict again") from e
    lacking = [c for c in DETECTION_COLUMNS if c not in det.columns]
    if lacking:
        raise BirdsedError(f"{path}: not a detections table of predict: no column(s) {lacking}; predict again")
    for c in ("file", "label"):  # as predict wrote them, before the spreadsheet escape (rows.spreadsheet_cell)
        det[c] = det[c].map(plain_cell)
    return det


def _run_model(pred_dir: Path) -> Path | None:
    """The model folder predict ran (run.json's "model"), None without a run.json; a damaged one is an error."""
    path = pred_dir / "run.json"
    if not path.is_file():
        return None
    try:
        model = json.loads(path.read_text())["model"]
    except (OSError, ValueError, KeyError, TypeError) as e:  # not JSON, not an object, no "model"
        raise BirdsedError(f"{path}: not a predict folder's run.json ({type(e).__name__}: {e})") from e
    if not isinstance(model, str):
        raise BirdsedError(f"{path}: 'model' = {model!r:.80}: not a folder name")
    return Path(model)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def truth_bands(al) -> dict[str, list[Band]]:
    """{predicted file: [Band]}: the annotated calls with their frequency bounds (evaluate.AlignedScores.events),
    or, for Kaggle's row truth, each labelled row (the whole file for a row without seconds)."""
    bands: dict[str, list[Band]] = {}
    if al.events is not None:
        for f, a, b, lab, lo, hi in al.events[["file", "start_s", "end_s", "label", "low_hz", "high_hz"]].itertuples(
            index=False
        ):
            bands.setdefault(f, []).append(Band(float(a), float(b), lab, float(lo), float(hi)))
        return bands
    labels = [[al.classes[k] for k in np.flatnonzero(row)] for row in al.true]
    for (f, start), labs in zip(al.rows.itertuples(index=False), labels):
        span = (0.0, float("inf")) if np.isnan(start) else (float(start), float(start) + 5.0)
        bands.setdefault(f, []).extend(Band(*span, lab) for lab in labs)
    return bands


_LIMIT_NOTE = (
    f"a report draws at most {REPORT_MAX_PICTURES} pictures (raise --page-s, lower --max-minutes or --max-recordings)"
)


@plain_text
def sweep_figure(score_report: dict) -> str:
    kinds = list(score_report["outputs"])  # one when the three outputs are equal (score.shown_outputs)
    fig, axes = plt.subplots(1, len(kinds), figsize=(14, 3.2), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, output in zip(axes, kinds):
        sw = pd.DataFrame(score_report["outputs"][output]["sweep"])
        ax.plot(sw["threshold"], sw["row_f1"], label="row-wise F1")
        ax.plot(sw["threshold"], sw["species_f1"], label="species F1", ls="--")
        ax.axvline(score_report["outputs"][output]["reference_threshold"], color="grey", lw=0.8, label="reference")
        used = score_report.get("decision", {})
        if used.get("output") == output:
            ax.axvline(used["threshold"], color="black", ls=":", lw=1.2, label="used (detections.csv)")
        ax.set_title(output)
        ax.set_xlabel("threshold")
    axes[0].set_ylabel("F1")
    axes[0].legend(fontsize=8)
    return _png(fig)


@plain_text
def training_figure(run_dir: Path) -> str:
    m = pd.read_csv(run_dir / "metrics.csv")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(14, 3.2))
    if "train_loss_step" in m:
        t = m.dropna(subset=["train_loss_step"])
        a1.plot(t["step"], t["train_loss_step"], label="train loss", lw=0.8)
    if "val_loss" in m:
        v = m.dropna(subset=["val_loss"])
        a1.plot(v["step"], v["val_loss"], label="val loss", marker="o")
    a1.set_xlabel("step")
    a1.legend(fontsize=8)
    for col in [c for c in m.columns if c.startswith("val_f1_") or c == "val_map"]:
        v = m.dropna(subset=[col])
        a2.plot(v["epoch"], v[col], label=col, marker=".")
    a2.set_xlabel("epoch")
    a2.legend(fontsize=8)
    return _png(fig)


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda x: f"{x:.3f}", border=0, classes="t")


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _swatch(colour: str) -> str:
    return f'<span class=sw style="background:{colour}"></span>'


def _rgba(colour: str, alpha: float) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha:.2f})"


def _names_cells(label: str, names: ClassNames) -> str:
    """A species' cells: class as the model names it, code, common and scientific names (empty where unknown)."""
    sp = names.of(label)
    return f"<td>{_e(label)}</td><td>{_e(sp.code)}</td><td>{_e(sp.common)}</td><td><i>{_e(sp.scientific)}</i></td>"


def legend_table(det: pd.DataFrame, colours: dict[str, str], names: ClassNames) -> str:
    """The legend: every species detected, one row each (most detected first): its colour and names, its detections
    (5 s rows), mean score and recordings; then the species only the truth has, in their colours."""
    counts = det.groupby("label").agg(n=("score", "size"), mean=("score", "mean"), files=("file", "nunique"))
    annotated = sorted(set(colours) - set(counts.index))
    more = (
        "<p>annotated, not detected: "
        + " ".join(f"{_swatch(colours[c])}{_e(short_name(c, names.of(c)))}" for c in annotated)
        + "</p>"
        if annotated
        else ""
    )
    if counts.empty:
        return "<p>none</p>" + more
    rows = []
    for label in sorted(counts.index, key=lambda c: (-counts["n"][c], c)):
        n, mean, files = (counts[k].get(label, 0) for k in ("n", "mean", "files"))
        rows.append(
            f'<tr><td class=sp data-label="{_e(label)}">{_swatch(colours[label])}</td>{_names_cells(label, names)}'
            f"<td class=n>{n}</td><td class=n>{f'{mean:.3f}' if n else ''}</td><td class=n>{files}</td></tr>"
        )
    return (
        '<table class="t legend"><tr class=head><th></th><th>class</th><th>code</th><th>common name</th>'
        "<th>scientific name</th><th>detections</th><th>mean score</th><th>recordings</th></tr>"
        + "".join(rows)
        + "</table>"
        + more
    )


def decision_section(pred_dir: Path, used) -> str:
    """The decision behind detections.csv as run.json records it (predict's decision record), else where
    evaluate.score.used_decision found it."""
    try:
        record = json.loads((pred_dir / "run.json").read_text()).get("decision")
    except (OSError, ValueError, AttributeError):
        record = None
    items = [("output", used.output), ("threshold", f"{used.threshold:g}"), ("from", used.source)]
    if isinstance(record, dict):
        items += [
            ("max birds per row", record.get("max_birds")),
            ("neighbour smoothing", record.get("neighbour_smoothing")),
            ("calibrated scores", record.get("calibrated")),
        ]
    if used.per_class:
        shown = ", ".join(f"{c} {t:g}" for c, t in list(used.per_class.items())[:30])
        more = f" and {len(used.per_class) - 30} more" if len(used.per_class) > 30 else ""
        items.append((f"per-class thresholds ({len(used.per_class)})", shown + more))
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items)
    return f'<h2>Decision</h2><table class="t kv" id=decision>{rows}</table>'


def per_class_table(sr: dict, colours: dict[str, str], names: ClassNames) -> str:
    """Each class's precision, recall and F1 at the threshold predict used (score_report's per_class), the classes
    with truth or detections; how many classes had neither."""
    per = pd.DataFrame(sr["per_class"])
    shown = per[(per["support"] > 0) | (per["predicted"] > 0)].sort_values(
        ["support", "class"], ascending=[False, True]
    )
    rows = "".join(
        f"<tr><td>{_swatch(colours[r['class']]) if r['class'] in colours else ''}</td>{_names_cells(r['class'], names)}"
        f"<td class=n>{r['threshold']:.2f}</td><td class=n>{r['precision']:.3f}</td><td class=n>{r['recall']:.3f}</td>"
        f"<td class=n>{r['f1']:.3f}</td><td class=n>{r['support']}</td><td class=n>{r['predicted']}</td></tr>"
        for r in shown.to_dict("records")
    )
    d = sr["decision"]
    left = len(per) - len(shown)
    return (
        f"<h3>Per class, at the threshold used ({_e(d['output'])} {d['threshold']:g})</h3>"
        '<table class="t per-class" id=per-class><tr class=head><th></th><th>class</th><th>code</th>'
        "<th>common name</th><th>scientific name</th><th>threshold</th><th>precision</th><th>recall</th><th>F1</th>"
        "<th>rows with it (truth)</th><th>rows detected</th></tr>"
        + rows
        + "</table>"
        + (f"<p>{left} class(es) with neither truth nor detections not listed</p>" if left else "")
    )


def _heat_table(table: pd.DataFrame, key: str, keys: list[str], colours: dict[str, str], names: ClassNames, id_: str):
    """Species (rows) by `key` (columns): detected 5 s rows, each cell shaded in the species' colour by its share of
    the species' busiest cell; an "all species" row first."""
    grid = table.pivot_table(index="class", columns=key, values="rows", aggfunc="sum", fill_value=0)
    grid = grid.reindex(columns=keys, fill_value=0)
    grid = grid.loc[grid.sum(axis=1).sort_values(ascending=False, kind="stable").index]
    head = "".join(f"<th>{_e(k)}</th>" for k in keys)
    total = grid.sum(axis=0)
    cells = "".join(f"<td>{int(v)}</td>" if v else "<td></td>" for v in total)
    rows = [f"<tr class=all><th>all species</th>{cells}</tr>"]
    for label, counts in grid.iterrows():
        colour, top = colours.get(label, "#555555"), max(int(counts.max()), 1)
        sp = names.of(label)
        cells = "".join(
            f'<td style="background:{_rgba(colour, 0.1 + 0.9 * v / top)}">{int(v)}</td>' if v else "<td></td>"
            for v in counts
        )
        rows.append(f'<tr><th title="{_e(sp.common)}">{_swatch(colour)}{_e(short_name(label, sp))}</th>{cells}</tr>')
    return f'<table class="t heat" id={id_}><tr class=head><th>{key}</th>{head}</tr>{"".join(rows)}</table>'


def activity_section(pred_dir: Path, colours: dict[str, str], names: ClassNames) -> str:
    """Detections by hour of day and species by date, as `birdsed summary --by hour / day` counts them (the same
    decision, the recordings' local clock from PRED/recordings.csv or the scores' `time` column); "" when neither
    gives the recordings' start times."""
    import pyarrow.parquet as pq

    from birdsed.evaluate.summary import UNKNOWN, Recordings, check_grouping, summarize

    path = pred_dir / "scores.parquet"
    try:
        try:
            check_grouping("hour", pq.read_schema(path).names, path, Recordings.read(pred_dir))
        except ConfigError:
            return ""  # no start times: nothing to draw
        by_hour, _ = summarize(pred_dir, by="hour")
        by_day, _ = summarize(pred_dir, by="day")
    except BirdsedError as e:
        return f"<h2>Activity</h2><p class=err>not drawn: {_e(e)}</p>"
    for t in (by_hour, by_day):
        for c in t["class"]:
            colours.setdefault(c, "#555555")
    hours = [f"{h:02d}" for h in range(24)] + ([UNKNOWN] if (by_hour["hour"] == UNKNOWN).any() else [])
    days = sorted(d for d in by_day["day"].unique() if d != UNKNOWN) + (
        [UNKNOWN] if (by_day["day"] == UNKNOWN).any() else []
    )
    return (
        "<h2>Activity</h2><p>5 s rows with each species (as <code>birdsed summary</code> counts them), by the hour "
        "of day they start in and by date (the recorders' local clock)</p>"
        "<h3>By hour of day</h3>"
        + _heat_table(by_hour, "hour", hours, colours, names, "by-hour")
        + "<h3>By date</h3>"
        + _heat_table(by_day, "day", days, colours, names, "by-day")
    )


def evaluation_section(pred_dir: Path, aligned, truth, used, colours: dict[str, str], names: ClassNames) -> str:
    """The evaluation against truth: row-wise F1 of a submission, the outputs' table and sweep, the per-class table at
    the threshold used, the annotated calls found, what was not used."""
    from birdsed.evaluate.score import event_table, score_report, score_table
    from birdsed.evaluate.submission import evaluate_submission

    parts = [f"<h2>Evaluation</h2><p>truth: {_e(truth)}</p>"]
    if aligned.events is None and (pred_dir / "submission.csv").is_file():
        rep = evaluate_submission(pred_dir / "submission.csv", truth)
        parts.append(
            f"<p>row-wise micro F1 <b>{rep.row_f1:.4f}</b>; species precision {rep.precision:.3f}, "
            f"recall {rep.recall:.3f}, F1 {rep.species_f1:.3f} ({rep.n_rows} rows)</p>"
        )
        parts.append(_table(rep.per_class))
    sr = score_report(aligned, used)
    parts.append(_table(score_table(sr)) + sweep_figure(sr))
    parts.append(per_class_table(sr, colours, names))
    if aligned.events is not None:
        parts.append("<h3>Annotated calls found</h3>" + _table(event_table(sr)))
    parts += [f"<p class=err>not used: {_e(line)}</p>" for line in sr["unused_lines"]]
    return "".join(parts)


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1340px;padding:0 1em;color:#222}
img{max-width:100%;display:block;margin:4px 0}
table.t{border-collapse:collapse;font-size:13px;margin:6px 0}
table.t td,table.t th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}
table.t td.n{text-align:right}
table.kv th{font-weight:normal;color:#555}
table.heat td{text-align:center;min-width:1.6em;font-size:11px;padding:1px 3px}
table.heat tr.all td{font-weight:bold}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;vertical-align:-1px}
.err{color:#b00}
.rec{margin-top:1.4em}
.rec .meta{color:#555;font-size:13px;margin:2px 0 6px}
figure.panel{position:relative;margin:0 0 6px;break-inside:avoid;page-break-inside:avoid}
figure.panel img.sg{position:absolute;margin:0;image-rendering:auto}
figure.panel svg{position:absolute;left:0;top:0;width:100%;height:100%}
svg text{font-size:11px;fill:#333}
svg text.yl{text-anchor:end}
svg text.xl{text-anchor:middle}
svg text.unit{fill:#666;text-anchor:middle}
svg text.lane{text-anchor:end;font-weight:bold}
svg text.score{fill:#fff;font-size:10px;font-weight:bold;pointer-events:none}
svg text.thrl{fill:#777;font-size:10px}
svg rect.frame{fill:none;stroke:#bbb}
svg rect.truth{fill:none;stroke-width:1.6;stroke-dasharray:4 2}
svg a.listen rect{fill:transparent;stroke:none}
svg a.listen:hover rect{fill:rgba(30,90,200,.08);stroke:#1f5fc8;stroke-width:1}
svg a.det rect{opacity:.9}
svg a.det:hover rect{opacity:1;stroke:#000}
svg line.tick,svg line.axis{stroke:#666}
svg line.grid{stroke:#e4e4e4}
svg line.thr{stroke:#888;stroke-dasharray:5 3}
svg polyline.curve{fill:none;stroke-width:1.6}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}
@media print{body{max-width:none;margin:0}}
"""


def build_report(
    pred_dir: str | Path,
    out: str | Path | None = None,
    truth: str | Path | None = None,
    test_csv: str | Path | None = None,
    run_dir: str | Path | None = None,
    output: str | None = None,
    max_recordings: int = 20,
    page_s: float = 60.0,
    max_minutes: float = REPORT_MAX_MINUTES,
    review_port: int = REVIEW_PORT,
    **truth_kw,
) -> Path:
    """The report of predict's output folder; with `truth` (any truth evaluate reads; truth_kw: its options) the
    evaluation and the annotated calls drawn in the species' lanes. Detections link to their cards on the review
    server at 127.0.0.1:`review_port` (`birdsed review PRED --port review_port`)."""
    pred_dir = Path(pred_dir)
    check_pages(max_recordings, page_s, max_minutes)
    if not (pred_dir / "scores.parquet").is_file():
        raise BirdsedError(f"{pred_dir}: no scores.parquet; run `birdsed predict --out {pred_dir}` first")
    out = Path(out) if out else pred_dir / "report.html"
    from birdsed.evaluate.score import align_files, read_scores, used_decision

    scores = read_scores(pred_dir / "scores.parquet")
    det = read_detections(pred_dir / "detections.csv")
    model_dir = _run_model(pred_dir)
    used = used_decision(pred_dir / "scores.parquet")
    output = output or used.output
    aligned = align_files(pred_dir / "scores.parquet", truth, test_csv, **truth_kw) if truth else None
    bands = truth_bands(aligned) if aligned is not None else {}
    files = list(dict.fromkeys(scores["file"]))
    drawn = files[:max_recordings]
    species = sorted(set(det["label"]) | {b.label for f in drawn for b in bands.get(f, [])})
    colours = class_colours(species, first=det["label"])
    has_model = model_dir is not None and (model_dir / "model.json").is_file()
    meta = read_model_meta(model_dir) if has_model else None
    names = class_names(meta.classes, meta.raw) if meta is not None else class_names(species)
    threshold = used.threshold if output == used.output else None
    parts = [
        "<h1>birdsed report</h1>"
        f"<p>predictions: {_e(pred_dir.resolve())}; model: {_e(model_dir or 'unknown (no run.json)')}; "
        f"{len(files)} recording(s); {len(det)} detection(s); scores drawn: <b>{_e(output)}</b></p>",
        decision_section(pred_dir, used),
        "<h2>Detections per class</h2>" + legend_table(det, colours, names),
    ]
    if aligned is not None:
        parts.append(evaluation_section(pred_dir, aligned, truth, used, colours, names))
    parts.append(activity_section(pred_dir, colours, names))
    if run_dir and (Path(run_dir) / "metrics.csv").is_file():
        parts.append("<h2>Training</h2>" + training_figure(Path(run_dir)))
    base = review_base(review_port)
    parts.append(
        f"<h2>Recordings</h2><p>{len(drawn)} of {len(files)} shown (--max-recordings), each whole up to "
        f"{max_minutes:g} min, in panels of {page_s:g} s. A detection's bar opens its card on the review page: "
        f"start <code>birdsed review {_e(pred_dir)} --port {review_port}</code>, then click (<code>{_e(base)}</code>)."
        "</p>"
    )
    kind_rows = scores[scores["output"] == output]
    budget = REPORT_MAX_PICTURES
    for i, f in enumerate(drawn):
        if budget <= 0:
            parts.append(f"<p class=err>{len(drawn) - i} recording(s) not drawn: {_LIMIT_NOTE}</p>")
            break
        view = RecordingView(
            f,
            kind_rows[kind_rows["file"] == f],
            det[det["file"] == f],
            bands.get(f, []),
            colours,
            threshold,
            base,
            names,
        )
        parts.append(recording_section(view, page_s, max_minutes * 60, budget))
        budget -= parts[-1].count("<figure class=panel")
    page = (
        "<!doctype html><html><head><meta charset=utf-8><title>birdsed report</title>"
        f"<style>{STYLE}</style></head><body>" + "\n".join(parts) + "</body></html>"
    )
    write_text_atomic(out, page)
    return out


def recording_section(view: RecordingView, page_s: float, max_s: float, max_panels: int) -> str:
    """A recording's heading (name, duration, its species in their colours), its panels, what was left out."""
    drawn = recording_panels(view, page_s, max_s, max_panels)
    species = " ".join(f"{_swatch(view.colours[c])}{_e(short_name(c, view.names.of(c)))}" for c in view.detected)
    annotated = {b.label for b in view.truth} - set(view.detected)
    minutes = f"{drawn.duration_s / 60:.1f} min" if drawn.duration_s >= 60 else f"{drawn.duration_s:.1f} s"
    notes = []
    if drawn.pages_left:
        notes.append(f"<p class=err>{drawn.pages_left} page(s) not drawn: {_LIMIT_NOTE}</p>")
    if drawn.cut_at_s is not None:
        notes.append(f"<p class=err>only its first {drawn.cut_at_s / 60:g} min drawn (--max-minutes)</p>")
    return (
        f'<section class=rec data-file="{_e(view.path)}" data-duration-s="{drawn.duration_s:g}">'
        f"<h3>{_e(Path(view.path).name)}</h3>"
        f"<p class=meta>{_e(view.path)} · {minutes} · detected: {species or 'none'}"
        f"{f' · {len(annotated)} more species annotated' if annotated else ''}</p>"
        + "".join(drawn.parts)
        + "".join(notes)
        + "</section>"
    )

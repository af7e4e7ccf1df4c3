"""`birdsed report`: one self-contained HTML page (images embedded) of what `predict` found.

Per recording: the log-mel spectrogram in pages of `page_s` seconds with detections drawn as
labelled bands (truth, when given, as outlined boxes in another colour) and the score
timeline of the top classes under it. Then a summary per class, the evaluation and the
threshold sweep when truth is given, and the training curves when a run folder is given.

Text from the data (class names, file names) is drawn as written: matplotlib's mathtext is off for every figure
(a class named `a$\foo$b` is text, not a formula), and the page escapes it as HTML. The pictures drawn are bounded
(REPORT_MAX_PICTURES, pages of at least REPORT_MIN_PAGE_S): past the bound the page says what was not drawn.
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
import librosa  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from birdsed import SAMPLE_RATE_HZ  # noqa: E402
from birdsed.audio.decode import stream_audio  # noqa: E402
from birdsed.config.choices import REPORT_MAX_MINUTES, REPORT_MAX_PICTURES, REPORT_MIN_PAGE_S  # noqa: E402
from birdsed.errors import AudioDecodeError, BirdsedError, ConfigError  # noqa: E402
from birdsed.fsutil import write_text_atomic  # noqa: E402
from birdsed.infer.writers import merge_runs  # noqa: E402
from birdsed.model.meta import default_output_of, read_meta
from birdsed.rows import DETECTION_COLUMNS, SCORE_META_COLUMNS, plain_cell

COLOURS = plt.get_cmap("tab10").colors


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


def _head_audio(path: str, max_s: float) -> np.ndarray:
    """The first max_s seconds of a recording (streamed: a long file is never read whole)."""
    chunks, total = [], 0
    for c in stream_audio(path, chunk_s=30.0):
        chunks.append(c)
        total += len(c)
        if total >= max_s * SAMPLE_RATE_HZ:
            break
    return np.concatenate(chunks)[: int(max_s * SAMPLE_RATE_HZ)]


Band = tuple[float, float, str, float, float]  # start_s, end_s, label, low_hz, high_hz (NaN: the whole band)
MEL_FMIN_HZ, MEL_FMAX_HZ, MEL_BINS = 50.0, 14000.0, 128


def truth_bands(al) -> dict[str, list[Band]]:
    """{predicted file: [Band]}: the annotated calls with their frequency bounds (evaluate.AlignedScores.events),
    or, for Kaggle's row truth, each labelled row as a box over the whole band."""
    bands: dict[str, list] = {}
    if al.events is not None:
        for f, a, b, lab, lo, hi in al.events[["file", "start_s", "end_s", "label", "low_hz", "high_hz"]].itertuples(
            index=False
        ):
            bands.setdefault(f, []).append((float(a), float(b), lab, float(lo), float(hi)))
        return bands
    labels = [[al.classes[k] for k in np.flatnonzero(row)] for row in al.true]
    for (f, start), labs in zip(al.rows.itertuples(index=False), labels):
        span = (0.0, float("inf")) if np.isnan(start) else (float(start), float(start) + 5.0)
        bands.setdefault(f, []).extend((*span, lab, np.nan, np.nan) for lab in labs)
    return bands


def mel_bin(hz: float) -> float:
    """Where a frequency falls on the report's mel axis (MEL_BINS bins over MEL_FMIN_HZ..MEL_FMAX_HZ)."""
    lo, hi = librosa.hz_to_mel(MEL_FMIN_HZ), librosa.hz_to_mel(MEL_FMAX_HZ)
    return float(np.clip((librosa.hz_to_mel(hz) - lo) / (hi - lo) * MEL_BINS, 0, MEL_BINS))


@plain_text
def recording_figures(
    path: str,
    scores: pd.DataFrame,
    det: pd.DataFrame,
    output: str,
    truth: list[Band],
    page_s: float,
    max_s: float,
    top_k: int = 5,
    max_pictures: int = REPORT_MAX_PICTURES,
) -> list[str]:
    """One image per page: spectrogram with detections (and truth) over the score timeline of the top classes; at
    most `max_pictures` of them, then a line saying how many pages were left out."""
    try:
        audio = _head_audio(path, max_s)
    except AudioDecodeError as e:
        return [f"<p class=err>{html.escape(str(e))}</p>"]
    duration = len(audio) / SAMPLE_RATE_HZ
    rows = scores[(scores["file"] == path) & (scores["output"] == output)]
    classes = [c for c in scores.columns if c not in SCORE_META_COLUMNS]
    top = rows[classes].max().sort_values(ascending=False).index[:top_k].tolist() if len(rows) else []
    colour = {
        c: COLOURS[i % len(COLOURS)] for i, c in enumerate(sorted(set(top) | set(det["label"]) | {t[2] for t in truth}))
    }
    mel = librosa.power_to_db(
        librosa.feature.melspectrogram(
            y=audio, sr=SAMPLE_RATE_HZ, n_fft=1024, hop_length=320, n_mels=MEL_BINS, fmin=MEL_FMIN_HZ, fmax=MEL_FMAX_HZ
        ),
        ref=np.max,
    )
    events = merge_runs(det)
    lane = {c: i for i, c in enumerate(sorted(set(det["label"])))}  # one lane per class, from the top
    truth_lane = {c: i for i, c in enumerate(sorted({t[2] for t in truth}))}  # boxes without bounds: a lane per class
    images = []
    starts = np.arange(0, max(duration, 1e-3), page_s)
    for p0 in starts[:max_pictures]:
        p1 = min(p0 + page_s, duration)
        fig, (ax, ax2) = plt.subplots(2, 1, figsize=(14, 4.6), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
        f0, f1 = int(p0 * 100), int(p1 * 100) + 1
        ax.imshow(mel[:, f0:f1], origin="lower", aspect="auto", cmap="magma", extent=(p0, p1, 0, 128), vmin=-80, vmax=0)
        ax.set_ylabel("mel bin")
        for _, d in events[(events["end_s"] > p0) & (events["start_s"] < p1)].iterrows():
            top_y = 1.0 - 0.09 * lane[d["label"]]
            ax.axvspan(
                max(d["start_s"], p0),
                min(d["end_s"], p1),
                ymin=top_y - 0.08,
                ymax=top_y,
                color=colour[d["label"]],
                alpha=0.85,
            )
            ax.text(
                max(d["start_s"], p0) + 0.1,
                128 * (top_y - 0.04),
                f"{d['label']} {d['score']:.2f}",
                color="white",
                fontsize=8,
                va="center",
            )
        for a, b, lab, lo, hi in truth:
            if b > p0 and a < p1:
                if np.isfinite(lo) and np.isfinite(hi):  # an annotated box: its own frequency bounds
                    y, h = mel_bin(lo), max(1.0, mel_bin(hi) - mel_bin(lo))
                else:
                    y, h = 2 + 11 * truth_lane[lab], 10
                ax.add_patch(plt.Rectangle((max(a, p0), y), min(b, p1) - max(a, p0), h, fill=False, ec="cyan", lw=1.2))
                ax.text(max(a, p0) + 0.1, y + h / 2, f"truth: {lab}", color="cyan", fontsize=7, va="center")
        centres = rows["start_s"].to_numpy() + 2.5
        lines = [ax2.step(centres, rows[c].to_numpy(), where="mid", color=colour[c])[0] for c in top]
        ax2.set_ylim(0, 1.02)
        ax2.set_xlim(p0, p0 + page_s)
        ax2.set_ylabel(f"{output}\nscore")
        ax2.set_xlabel("time (s)")
        if top:
            # handles and labels given: a class named "_x" is not hidden, as matplotlib hides "_" labels
            ax2.legend(lines, top, loc="upper right", fontsize=7, ncol=min(5, len(top)))
        images.append(_png(fig))
    if len(starts) > max_pictures:
        images.append(f"<p class=err>{len(starts) - max_pictures} page(s) not drawn: {_LIMIT_NOTE}</p>")
    return images


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
        ax.axvline(score_report["outputs"][output]["reference_threshold"], color="grey", lw=0.8)
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


def build_report(
    pred_dir: str | Path,
    out: str | Path | None = None,
    truth: str | Path | None = None,
    test_csv: str | Path | None = None,
    run_dir: str | Path | None = None,
    output: str | None = None,
    max_recordings: int = 20,
    page_s: float = 60.0,
    max_minutes: float = 10.0,
    **truth_kw,
) -> Path:
    """The report of predict's output folder; with `truth` (any truth evaluate reads; truth_kw: its options) the
    evaluation and the annotated calls drawn under the detections."""
    pred_dir = Path(pred_dir)
    check_pages(max_recordings, page_s, max_minutes)
    if not (pred_dir / "scores.parquet").is_file():
        raise BirdsedError(f"{pred_dir}: no scores.parquet; run `birdsed predict --out {pred_dir}` first")
    out = Path(out) if out else pred_dir / "report.html"
    from birdsed.evaluate.score import read_scores

    scores = read_scores(pred_dir / "scores.parquet")
    det = read_detections(pred_dir / "detections.csv")
    model_dir = _run_model(pred_dir)
    meta = read_meta(model_dir) if model_dir is not None and (model_dir / "model.json").is_file() else {}
    default_output = default_output_of(meta)
    output = output or default_output
    aligned = None
    if truth:
        from birdsed.evaluate.score import align_files

        aligned = align_files(pred_dir / "scores.parquet", truth, test_csv, **truth_kw)
    bands = truth_bands(aligned) if aligned is not None else {}
    parts = [
        f"<h1>birdsed report</h1><p>predictions: {html.escape(str(pred_dir.resolve()))}; "
        f"{scores['file'].nunique()} recording(s); rows decided on <b>{output}</b></p>"
    ]
    summary = (
        det.groupby("label")
        .agg(detections=("score", "size"), mean_score=("score", "mean"), files=("file", "nunique"))
        .reset_index()
        if len(det)
        else pd.DataFrame()
    )
    parts.append("<h2>Detections per class</h2>" + (_table(summary) if len(summary) else "<p>none</p>"))
    if aligned is not None:
        from birdsed.evaluate.score import event_table, score_report, score_table, used_decision
        from birdsed.evaluate.submission import evaluate_submission

        parts.append(f"<h2>Evaluation</h2><p>truth: {html.escape(str(truth))}</p>")
        if aligned.events is None and (pred_dir / "submission.csv").is_file():
            rep = evaluate_submission(pred_dir / "submission.csv", truth)
            parts.append(
                f"<p>row-wise micro F1 <b>{rep.row_f1:.4f}</b>; species precision {rep.precision:.3f}, "
                f"recall {rep.recall:.3f}, F1 {rep.species_f1:.3f} ({rep.n_rows} rows)</p>"
            )
            parts.append(_table(rep.per_class))
        sr = score_report(aligned, used_decision(pred_dir / "scores.parquet"))
        parts.append(_table(score_table(sr)) + sweep_figure(sr))
        if aligned.events is not None:
            parts.append("<h3>Annotated calls found</h3>" + _table(event_table(sr)))
        parts += [f"<p class=err>not used: {html.escape(line)}</p>" for line in sr["unused_lines"]]
    if run_dir and (Path(run_dir) / "metrics.csv").is_file():
        parts.append("<h2>Training</h2>" + training_figure(Path(run_dir)))
    files = list(dict.fromkeys(scores["file"]))
    parts.append(
        f"<h2>Recordings</h2><p>{min(len(files), max_recordings)} of {len(files)} shown, "
        f"the first {max_minutes:g} min of each, in pages of {page_s:g} s</p>"
    )
    budget = REPORT_MAX_PICTURES
    for i, f in enumerate(files[:max_recordings]):
        if budget <= 0:
            parts.append(
                f"<p class=err>{min(len(files), max_recordings) - i} recording(s) not drawn: {_LIMIT_NOTE}</p>"
            )
            break
        parts.append(f"<h3>{html.escape(Path(f).name)}</h3><div class=strip>")
        figures = recording_figures(
            f, scores, det[det["file"] == f], output, bands.get(f, []), page_s, max_minutes * 60, max_pictures=budget
        )
        budget -= sum(p.startswith("<img") for p in figures)
        parts += figures
        parts.append("</div>")
    page = (
        "<!doctype html><html><head><meta charset=utf-8><title>birdsed report</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:1200px}img{max-width:100%;display:block;margin:4px 0}"
        "table.t{border-collapse:collapse;font-size:13px}"
        "table.t td,table.t th{padding:2px 8px;border-bottom:1px solid #ddd}"
        ".strip{max-height:900px;overflow-y:auto;border:1px solid #eee}.err{color:#b00}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )
    write_text_atomic(out, page)
    return out

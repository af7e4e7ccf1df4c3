"""One recording in the report, whole: panels of `page_s` seconds, each a spectrogram (frequency in kHz, time in s or
m:ss), a lane per species with its detections (each a link to its review card) and truth, and every one of those
species' score curves with the threshold under it.

The spectrogram is the only raster: computed panel by panel from the streamed recording (memory holds one panel's
audio), pooled to the panel's pixels and stored as a grey JPEG (dark is loud, so it prints); axes, boxes, lanes and
curves are SVG drawn over it, so text stays sharp, links click and a panel scales with the page.

    panels = recording_panels(RecordingView(path, rows, det, truth, colours, threshold), Layout.for_page(60.0), 200)
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from PIL import Image

from birdsed import SAMPLE_RATE_HZ
from birdsed.audio.decode import audio_info, stream_audio
from birdsed.errors import AudioDecodeError
from birdsed.infer.writers import merge_runs
from birdsed.model.names import ClassNames, Species, class_names
from birdsed.review.links import card_url
from birdsed.rows import SCORE_META_COLUMNS

N_FFT, HOP = 1024, 512  # 31 Hz bins, 16 ms frames at 32 kHz (3 frames a pixel at 20 px/s)
FREQ_MAX_HZ = SAMPLE_RATE_HZ / 2  # recordings are resampled to 32 kHz: 16 kHz is the top of every picture
FREQ_TICK_HZ = 2000.0
PANEL_WIDTH_PX = 1200  # a page of page_s seconds: 20 px/s at the default 60 s
SPEC_HEIGHT_PX = 200
MARGIN_LEFT_PX, MARGIN_RIGHT_PX, MARGIN_TOP_PX = 96, 40, 4
LANE_HEIGHT_PX, CURVE_HEIGHT_PX, AXIS_HEIGHT_PX, GAP_PX = 15, 70, 24, 5
TIME_STEPS_S = (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
MAX_TIME_TICKS = 12
DB_FLOOR_PERCENTILE, DB_TOP_PERCENTILE, MIN_DB_RANGE = 50.0, 99.9, 30.0
JPEG_QUALITY = 85

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Band:
    """A call of the truth: start_s, end_s, label and its frequency bounds (NaN: not annotated, drawn in the lane)."""

    start_s: float
    end_s: float
    label: str
    low_hz: float = math.nan
    high_hz: float = math.nan

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.low_hz) and math.isfinite(self.high_hz)


@dataclass
class RecordingView:
    """What the panels of one recording show: its scores of the drawn output kind (file, start_s, end_s and a column
    per class), its detections (DETECTION_COLUMNS), its truth, the report's colours and the decision's threshold."""

    path: str
    rows: pd.DataFrame
    detections: pd.DataFrame
    truth: list[Band]
    colours: dict[str, str]
    threshold: float | None
    review_base: str | None = None  # the review server's address (review/links.py); None: its default
    names: ClassNames = field(default_factory=lambda: class_names([]))

    @cached_property
    def events(self) -> pd.DataFrame:
        """The detections joined into runs of touching rows per species (their scores written once a run)."""
        return merge_runs(self.detections)

    @cached_property
    def top_class(self) -> np.ndarray:
        """Each row's highest-scoring class (what clicking the spectrogram at that row opens). [shape=(len(rows),)]"""
        classes = [c for c in self.rows.columns if c not in SCORE_META_COLUMNS and self.rows[c].dtype.kind == "f"]
        if not classes or self.rows.empty:
            return np.array([""] * len(self.rows), dtype=object)
        return np.asarray(classes, dtype=object)[self.rows[classes].to_numpy(np.float32).argmax(axis=1)]

    @property
    def detected(self) -> list[str]:
        """The species detected anywhere in this recording: each has its score curve in every panel."""
        return sorted(set(self.detections["label"]))

    def lanes(self, p0: float, p1: float) -> list[str]:
        """The species with a lane in the panel p0..p1 s: those detected or annotated in it."""
        return sorted(
            set(within(self.detections, p0, p1)["label"])
            | {b.label for b in self.truth if b.end_s > p0 and b.start_s < p1}
        )


@dataclass(frozen=True)
class Layout:
    """A panel's geometry in px (the SVG's own units; the page scales the whole panel to its width)."""

    page_s: float
    n_lanes: int = 0

    @property
    def px_per_s(self) -> float:
        return PANEL_WIDTH_PX / self.page_s

    @property
    def lanes_top(self) -> float:
        return MARGIN_TOP_PX + SPEC_HEIGHT_PX + GAP_PX

    @property
    def curves_top(self) -> float:
        return self.lanes_top + self.n_lanes * LANE_HEIGHT_PX + GAP_PX

    @property
    def axis_y(self) -> float:
        return self.curves_top + CURVE_HEIGHT_PX

    @property
    def width(self) -> float:
        return MARGIN_LEFT_PX + PANEL_WIDTH_PX + MARGIN_RIGHT_PX

    @property
    def height(self) -> float:
        return self.axis_y + AXIS_HEIGHT_PX

    def x(self, t_s: float, p0_s: float) -> float:
        return MARGIN_LEFT_PX + (t_s - p0_s) * self.px_per_s

    def freq_y(self, hz: float) -> float:
        return MARGIN_TOP_PX + SPEC_HEIGHT_PX * (1 - min(max(hz, 0.0), FREQ_MAX_HZ) / FREQ_MAX_HZ)

    def score_y(self, score: float) -> float:
        return self.curves_top + CURVE_HEIGHT_PX * (1 - min(max(score, 0.0), 1.0))

    def lane_y(self, lane: int) -> float:
        return self.lanes_top + lane * LANE_HEIGHT_PX


def power_frames(audio: np.ndarray) -> np.ndarray:
    """The power spectrogram of `audio`: Hann-windowed frames of N_FFT every HOP samples, centred (the first frame at
    0 s). [shape=(T, N_FFT // 2 + 1)], float32"""
    import scipy.fft  # 10x numpy.fft on float32 frames; imported here, the report's only use

    x = np.pad(audio.astype(np.float32, copy=False), (N_FFT // 2, N_FFT // 2))
    n = max(1, 1 + (len(x) - N_FFT) // HOP)
    x = np.pad(x, (0, max(0, N_FFT - len(x))))
    frames = np.lib.stride_tricks.as_strided(x, (n, N_FFT), (x.strides[0] * HOP, x.strides[0]), writeable=False)
    spec = scipy.fft.rfft(frames * _WINDOW, axis=1)  # (T, N_FFT // 2 + 1) complex64
    return spec.real**2 + spec.imag**2


_WINDOW = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann


def spectrogram_pixels(audio: np.ndarray, width_px: int, height_px: int = SPEC_HEIGHT_PX) -> np.ndarray:
    """A grey picture of `audio`'s power spectrogram, 0..FREQ_MAX_HZ bottom to top, pooled (max: a short call keeps
    its pixel) to the pixels; dark is loud, scaled from the panel's noise floor (its DB_FLOOR_PERCENTILE) up.
    [shape=(height_px, width_px)], uint8"""
    power = power_frames(audio)  # (T, F)
    n_frames, n_bins = power.shape
    cols = np.linspace(0, n_frames, width_px + 1).astype(int)[:-1]
    power = np.maximum.reduceat(power, cols, axis=0) if n_frames >= width_px else power[cols]  # (width_px, F)
    rows = np.linspace(0, n_bins, height_px + 1).astype(int)[:-1]
    power = np.maximum.reduceat(power, rows, axis=1).T  # (height_px, width_px), low frequencies first
    db = 10 * np.log10(power + 1e-12)
    floor = np.percentile(db, DB_FLOOR_PERCENTILE)
    top = max(np.percentile(db, DB_TOP_PERCENTILE), floor + MIN_DB_RANGE)
    level = np.clip((db - floor) / (top - floor), 0, 1)
    return (255 * (1 - level**0.8)).astype(np.uint8)[::-1]


def jpeg_data_url(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, "JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def time_step_s(page_s: float) -> float:
    """The time axis' tick spacing: the smallest of TIME_STEPS_S giving at most MAX_TIME_TICKS ticks a panel."""
    return next((s for s in TIME_STEPS_S if page_s / s <= MAX_TIME_TICKS), TIME_STEPS_S[-1])


def clock(t_s: float, long: bool) -> str:
    """A time label: seconds ("12.5") for a short recording, m:ss (h:mm:ss past an hour) for a long one."""
    if not long:
        return f"{t_s:g}"
    whole = int(round(t_s))
    h, m, s = whole // 3600, whole % 3600 // 60, whole % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def short_name(label: str, sp: Species, max_chars: int = 13) -> str:
    """A class's name where space is short (a lane, a table's row): the class itself, or its species' code when the
    class's name is long ("Cyanocitta stelleri_Steller's Jay": stejay), else the name cut with an ellipsis."""
    if len(label) <= max_chars:
        return label
    if sp.common and len(sp.code) <= max_chars:
        return sp.code
    return label[: max_chars - 1] + "…"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _axes(lay: Layout, p0: float, p1: float, long: bool) -> list[str]:
    """kHz ticks left of the spectrogram, the time axis under the curves, the score scale, lane separators."""
    out = []
    for k in range(int(FREQ_MAX_HZ // FREQ_TICK_HZ) + 1):
        y = lay.freq_y(k * FREQ_TICK_HZ)
        out.append(f'<line class=tick x1="{MARGIN_LEFT_PX - 4}" x2="{MARGIN_LEFT_PX}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class=yl x="{MARGIN_LEFT_PX - 6}" y="{y + 3.5:.1f}">{k * FREQ_TICK_HZ / 1000:g}</text>')
    out.append(
        f'<text class=unit transform="translate(12,{MARGIN_TOP_PX + SPEC_HEIGHT_PX / 2}) rotate(-90)">kHz</text>'
    )
    step = time_step_s(lay.page_s)
    t = math.ceil(p0 / step - 1e-9) * step
    while t <= p1 + 1e-9:
        x = lay.x(t, p0)
        out.append(f'<line class=grid x1="{x:.1f}" x2="{x:.1f}" y1="{lay.lanes_top}" y2="{lay.axis_y}"/>')
        out.append(f'<line class=tick x1="{x:.1f}" x2="{x:.1f}" y1="{lay.axis_y}" y2="{lay.axis_y + 4}"/>')
        out.append(f'<text class=xl x="{x:.1f}" y="{lay.axis_y + 15}">{clock(t, long)}</text>')
        t += step
    x_end = lay.x(p0 + lay.page_s, p0)
    out.append(f'<text class=unit x="{MARGIN_LEFT_PX - 30}" y="{lay.axis_y + 15}">{"m:ss" if long else "s"}</text>')
    out.append(
        f'<line class=axis x1="{MARGIN_LEFT_PX}" x2="{x_end:.1f}" y1="{lay.axis_y}" y2="{lay.axis_y}"/>'
        f'<line class=axis x1="{MARGIN_LEFT_PX}" x2="{MARGIN_LEFT_PX}" y1="{lay.curves_top}" y2="{lay.axis_y}"/>'
    )
    for s in (0.0, 0.5, 1.0):
        out.append(f'<text class=yl x="{MARGIN_LEFT_PX - 6}" y="{lay.score_y(s) + 3.5:.1f}">{s:g}</text>')
    out.append(
        f'<text class=unit transform="translate(12,{lay.curves_top + CURVE_HEIGHT_PX / 2}) rotate(-90)">score</text>'
    )
    return out


def within(table: pd.DataFrame, p0: float, p1: float) -> pd.DataFrame:
    """The rows of a table of spans (start_s, end_s) that overlap p0..p1 s."""
    if table.empty:
        return table
    return table[(table["end_s"].to_numpy() > p0) & (table["start_s"].to_numpy() < p1)]


def spans_of(table: pd.DataFrame, label: str, columns: tuple[str, ...]) -> zip:
    """The rows of one species in a small table, as tuples of `columns` (numpy, without pandas' indexing per row)."""
    if table.empty:
        return zip()
    mask = table["label"].to_numpy() == label
    return zip(*(table[c].to_numpy()[mask] for c in columns))


def _lanes(view: RecordingView, lay: Layout, p0: float, p1: float) -> list[str]:
    """Per species detected or annotated in the panel: its code at the left, its detected rows as bars (each a link
    to its review card, its score on hover, the run's best score written at its start), its truth outlined (in the
    lane, and as a box in the picture where the truth has frequency bounds)."""
    out = []
    det, events = (within(t, p0, p1) for t in (view.detections, view.events))
    for lane, label in enumerate(view.lanes(p0, p1)):
        y, colour, sp = lay.lane_y(lane), view.colours[label], view.names.of(label)
        name = f"{label}: {sp.common} ({sp.scientific}, {sp.code})" if sp.common else label
        short = short_name(label, sp)
        out.append(
            f'<text class=lane x="{MARGIN_LEFT_PX - 6}" y="{y + LANE_HEIGHT_PX - 4}" fill="{colour}">'
            f"<title>{_e(name)}</title>{_e(short)}</text>"
        )
        for a, b, score in spans_of(det, label, ("start_s", "end_s", "score")):
            x0, x1 = lay.x(max(a, p0), p0), lay.x(min(b, p1), p0)
            url = card_url(label, view.path, a, view.review_base)
            out.append(
                f'<a class=det href="{_e(url)}" target="_blank"><rect x="{x0:.1f}" y="{y + 1}" '
                f'width="{max(x1 - x0 - 1, 1):.1f}" height="{LANE_HEIGHT_PX - 2}" fill="{colour}">'
                f"<title>{_e(name)}: {score:.3f} at {a:g}-{b:g} s (listen and verify)</title></rect></a>"
            )
        for a, score in spans_of(events, label, ("start_s", "score")):
            out.append(f'<text class=score x="{lay.x(max(a, p0), p0) + 3:.1f}" y="{y + 11}">{score:.2f}</text>')
        for band in view.truth:
            if band.label != label or band.end_s <= p0 or band.start_s >= p1:
                continue
            x0, x1 = lay.x(max(band.start_s, p0), p0), lay.x(min(band.end_s, p1), p0)
            tip = f"<title>truth: {_e(name)} {band.start_s:g}-{band.end_s:g} s</title>"
            if band.bounded:
                top, bottom = lay.freq_y(band.high_hz), lay.freq_y(band.low_hz)
                out.append(
                    f'<rect class=truth x="{x0:.1f}" y="{top:.1f}" width="{x1 - x0:.1f}" '
                    f'height="{max(bottom - top, 2):.1f}" stroke="{colour}">{tip}</rect>'
                )
            out.append(
                f'<rect class=truth x="{x0:.1f}" y="{y + 0.5}" width="{x1 - x0:.1f}" height="{LANE_HEIGHT_PX - 1}" '
                f'stroke="{colour}">{tip}</rect>'
            )
    return out


def _listen(view: RecordingView, lay: Layout, p0: float, p1: float) -> list[str]:
    """The spectrogram made clickable: each 5 s row a link to its card on the review page, for the row's
    highest-scoring class, so that any sound seen (detected or not) can be listened to."""
    rows = within(view.rows, p0, p1)
    top = view.top_class[(view.rows["end_s"].to_numpy() > p0) & (view.rows["start_s"].to_numpy() < p1)]
    out = []
    for a, b, label in zip(rows["start_s"].to_numpy(), rows["end_s"].to_numpy(), top):
        if not label:
            continue
        x0, x1 = lay.x(max(a, p0), p0), lay.x(min(b, p1), p0)
        out.append(
            f'<a class=listen href="{_e(card_url(label, view.path, a, view.review_base))}" target="_blank">'
            f'<rect x="{x0:.1f}" y="{MARGIN_TOP_PX}" width="{max(x1 - x0, 1):.1f}" height="{SPEC_HEIGHT_PX}">'
            f"<title>listen to {a:g}-{b:g} s (its top class: {_e(label)})</title></rect></a>"
        )
    return out


def _curves(view: RecordingView, lay: Layout, p0: float, p1: float) -> list[str]:
    """The score per 5 s row, as a step line, of every species detected in the recording or with a lane in the panel;
    the decision's threshold."""
    rows = within(view.rows, p0, p1)
    a, b = rows["start_s"].clip(lower=p0).to_numpy(), rows["end_s"].clip(upper=p1).to_numpy()
    out = []
    for label in sorted(set(view.detected) | set(view.lanes(p0, p1))):
        if label not in rows.columns or rows.empty:
            continue
        s = rows[label].to_numpy(np.float64)
        points = " ".join(f"{lay.x(t, p0):.1f},{lay.score_y(v):.1f}" for t0, t1, v in zip(a, b, s) for t in (t0, t1))
        out.append(f'<polyline class=curve points="{points}" stroke="{view.colours[label]}"/>')
    if view.threshold is not None and math.isfinite(view.threshold):
        y = lay.score_y(view.threshold)
        x1 = lay.x(p0 + lay.page_s, p0)
        out.append(
            f'<line class=thr x1="{MARGIN_LEFT_PX}" x2="{x1:.1f}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class=thrl x="{x1 + 3:.1f}" y="{y + 3.5:.1f}">{view.threshold:.2f}</text>'
        )
    return out


def panel_html(view: RecordingView, lay: Layout, p0: float, audio: np.ndarray, long: bool) -> str:
    """One panel: the spectrogram of `audio` (starting at p0 s) under its SVG, as a figure that scales with the page
    (the picture placed in percent of the panel, the SVG by its viewBox)."""
    p1 = p0 + len(audio) / SAMPLE_RATE_HZ
    lay = Layout(lay.page_s, len(view.lanes(p0, p1)))
    width_px = max(1, round((p1 - p0) * lay.px_per_s))
    w, h = lay.width, lay.height
    img_style = (
        f"left:{100 * MARGIN_LEFT_PX / w:.4f}%;top:{100 * MARGIN_TOP_PX / h:.4f}%;"
        f"width:{100 * width_px / w:.4f}%;height:{100 * SPEC_HEIGHT_PX / h:.4f}%"
    )
    alt = f"spectrogram of {_e(view.path)}, {clock(p0, long)} to {clock(p1, long)}"
    svg = [
        f'<svg viewBox="0 0 {w:g} {h:g}" xmlns="http://www.w3.org/2000/svg">',
        f'<rect class=frame x="{MARGIN_LEFT_PX}" y="{MARGIN_TOP_PX}" width="{width_px}" height="{SPEC_HEIGHT_PX}"/>',
        *_axes(lay, p0, p1, long),
        *_listen(view, lay, p0, p1),
        *_lanes(view, lay, p0, p1),
        *_curves(view, lay, p0, p1),
        "</svg>",
    ]
    return (
        f'<figure class=panel data-start-s="{p0:g}" data-end-s="{p1:g}" style="aspect-ratio:{w:g}/{h:g}">'
        f'<img class=sg alt="{alt}" src="{jpeg_data_url(spectrogram_pixels(audio, width_px))}" style="{img_style}">'
        + "".join(svg)
        + "</figure>"
    )


@dataclass
class Drawn:
    """A recording's panels (HTML) and what was left out: `pages_left` panels past the picture budget, and whether
    the recording runs past `max_s` (then only its first max_s seconds are drawn)."""

    parts: list[str]
    n_panels: int
    duration_s: float
    pages_left: int = 0
    cut_at_s: float | None = None


def recording_panels(view: RecordingView, page_s: float, max_s: float, max_panels: int) -> Drawn:
    """The panels of one recording, streamed panel by panel: its first `max_s` seconds (all of it when shorter), at
    most `max_panels` panels; a recording that does not decode is one line saying why."""
    try:
        duration = audio_info(view.path).duration_s
        lay = Layout(page_s)
        long = duration >= 60
        parts, p0 = [], 0.0
        if max_panels > 0:
            for chunk in stream_audio(view.path, chunk_s=page_s):
                parts.append(panel_html(view, lay, p0, chunk[: int(round((max_s - p0) * SAMPLE_RATE_HZ))], long))
                p0 += page_s
                if p0 >= max_s - 1e-9 or len(parts) >= max_panels:
                    break
    except AudioDecodeError as e:  # said on the console too: a report run from another folder finds no audio
        log.warning("report: not drawn: %s", e)
        return Drawn([f"<p class=err>{_e(e)}</p>"], 0, 0.0)
    shown_s = min(duration, max_s)
    pages_left = max(0, math.ceil(shown_s / page_s - 1e-9) - len(parts))
    return Drawn(parts, len(parts), duration, pages_left, max_s if duration > max_s + 1e-6 else None)

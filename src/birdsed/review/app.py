"""The review web app (Starlette, served by uvicorn): a thin view over queue.py, media.py and verdicts.py.

Routes (all under one predict folder, PRED):
    GET  /                      the page (page.html)
    GET  /api/state             classes with their names, the output kind, progress per species, the verdicts given
    GET  /api/queue             the next cards: ?species= &recording= &folder= &lo= &hi= &sample= &n= &seed=
    GET  /api/card              one card by its address (?file= &start_s= &label=: review/links.card_url; the page
                                opens it first when its own URL carries them)
    GET  /api/audio             a clip with context as WAV (Range requests answered): ?file= &start_s= &end_s=
    GET  /api/spectrogram       the same clip's spectrogram as PNG
    POST /api/verdict           {file, start_s, end_s, label, verdict, other_label, reviewer}: committed at once
    POST /api/undo              {file, start_s, end_s, label, reviewer}: that verdict taken back

Only the recordings PRED's scores name are ever opened: any other `file` is refused (403) before the disk is touched.
"""

from __future__ import annotations

import json
import math
import re
import signal
from dataclasses import asdict
from functools import lru_cache
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from birdsed.errors import AudioDecodeError, BirdsedError, ReviewError
from birdsed.model.names import ClassNames, class_names
from birdsed.review.media import excerpt, spectrogram_png, wav_bytes
from birdsed.review.queue import Predictions, QueueSpec, progress, select
from birdsed.review.verdicts import Verdict, VerdictStore, store_path

MAX_CARDS = 500
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class Refused(Exception):
    """A request the app answers with an error status and a message (never a traceback)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Review:
    """The state behind the app: PRED's predictions, the verdict store, the model's species names."""

    def __init__(self, pred: Path, output: str | None = None):
        self.preds = Predictions.open(pred, output)
        self.store = VerdictStore(store_path(pred))
        self.names = _class_names(self.preds.classes, self.preds.model_dir)

    def species(self, label: str) -> dict:
        s = self.names.of(label)
        return {"label": label, "code": s.code, "common": s.common, "scientific": s.scientific}

    def check_file(self, file: str) -> str:
        """`file` if PRED's scores name it; refused otherwise (the server opens no other file)."""
        if file not in self.preds.files:
            raise Refused(403, f"{file!r} is not a recording of {self.preds.pred}'s predictions: not served")
        return file

    @lru_cache(maxsize=4096)  # noqa: B019 - one Review per server, alive as long as it
    def problem(self, file: str) -> str:
        """Why a recording cannot be played ("" when it can): moved, unreadable."""
        from birdsed.audio.decode import audio_info

        try:
            audio_info(file)
        except AudioDecodeError as e:
            return str(e)
        return ""


def _class_names(classes: list[str], model_dir: Path | None) -> ClassNames:
    """The classes' species names as predict's tables name them (model.class_names: a class by its own name, or by
    the names its model keeps of it, e.g. a BirdNET model's classes mapped from a data set's species.csv); the
    model's record unread (moved, damaged): by their own names."""
    from birdsed.model.meta import read_model_meta

    try:
        meta = read_model_meta(model_dir).raw if model_dir is not None else None
    except BirdsedError:
        meta = None
    return class_names(classes, meta)


def _number(req: Request, name: str, default: float | None = None) -> float:
    text = req.query_params.get(name)
    if text is None:
        if default is None:
            raise Refused(400, f"missing ?{name}=")
        return default
    try:
        x = float(text)
    except ValueError:
        raise Refused(400, f"?{name}={text!r} is not a number") from None
    if not math.isfinite(x):
        raise Refused(400, f"?{name}={text!r} is not a finite number")
    return x


def _clip_of(review: Review, req: Request) -> tuple[str, float, float]:
    file = review.check_file(req.query_params.get("file", ""))
    start_s, end_s = _number(req, "start_s"), _number(req, "end_s")
    if not (0 <= start_s < end_s <= start_s + 60):
        raise Refused(400, f"clip {start_s}-{end_s} s: must be 0 <= start < end <= start + 60")
    return file, start_s, end_s


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def allowed_hosts(host: str) -> list[str]:
    """The Host headers the app answers, served on `host`: this machine's loopback names and `host` itself; served
    on every address (0.0.0.0, ::), also the machine's own name, full name and the addresses that name resolves to.
    Another name is a page elsewhere reaching this server through DNS rebinding: refused (400)."""
    names = [*LOCAL_HOSTS, host, f"[{host}]" if ":" in host else host]
    if host in ("0.0.0.0", "::", ""):
        import socket

        own = {socket.gethostname(), socket.getfqdn()}
        try:
            own |= {str(a[4][0]) for a in socket.getaddrinfo(socket.gethostname(), None)}
        except OSError:
            pass
        names += [f"[{n}]" if ":" in n else n for n in own]
    return list(dict.fromkeys(names))


def build_app(pred: str | Path, output: str | None = None, host: str = "127.0.0.1") -> Starlette:
    """The app over one predict folder (a ReviewError if PRED cannot be reviewed), answering only requests for
    `host` (allowed_hosts); a verdict or an undo is taken only as JSON from the page itself (same_origin_json)."""
    review = Review(Path(pred), output)

    def guarded(handler):
        async def route(req: Request) -> Response:
            try:
                return await handler(req)
            except Refused as e:
                return JSONResponse({"error": str(e)}, status_code=e.status)
            except AudioDecodeError as e:
                return JSONResponse({"error": str(e)}, status_code=404)
            except BirdsedError as e:
                return JSONResponse({"error": str(e)}, status_code=400)

        return route

    async def page(req: Request) -> Response:
        html = resources.files("birdsed.review").joinpath("page.html").read_text(encoding="utf-8")
        return HTMLResponse(html.replace("{{PRED}}", json.dumps(str(review.preds.pred))[1:-1]))

    async def state(req: Request) -> Response:
        table = review.store.table()
        return JSONResponse(
            {
                "pred": str(review.preds.pred),
                "output": review.preds.output,
                "queue": review.preds.has_queue,
                "classes": [review.species(c) for c in review.preds.classes],
                "progress": progress(table, review.preds.classes).fillna(-1).to_dict("records"),
                "verdicts": table.fillna(-1).to_dict("records"),
            }
        )

    async def queue(req: Request) -> Response:
        q = req.query_params
        species = q.get("species") or None
        if species is not None and species not in review.preds.classes:
            raise Refused(400, f"species {species!r} is not a class of the model")
        recording = q.get("recording") or None
        if recording is not None:  # the name a card shows, or a path as the user has it
            try:
                found = review.preds.find_file(recording)
            except ReviewError as e:
                raise Refused(400, str(e)) from e
            if found is None:
                raise Refused(400, f"recording {recording!r} is not one of the predictions' recordings")
            recording = found
        spec = QueueSpec(
            species=species,
            recording=recording,
            folder=q.get("folder") or None,
            band=(_number(req, "lo", 0.0), _number(req, "hi", 1.0)),
            sample=q.get("sample", "top"),
            n=int(min(max(_number(req, "n", 50), 1), MAX_CARDS)),
            seed=int(_number(req, "seed", 0)),
        )
        done = review.store.keys()
        chosen = select(review.preds.candidates(spec, done), spec, done=done)
        cards = [
            {**r, **review.species(r["label"]), "name": Path(r["file"]).name, "problem": review.problem(r["file"])}
            for r in chosen.to_dict("records")
        ]
        return JSONResponse({"cards": cards})

    async def card(req: Request) -> Response:
        file = review.check_file(req.query_params.get("file", ""))
        label = req.query_params.get("label", "")
        clip = review.preds.clip_at(file, _number(req, "start_s"), label)
        if clip is None:
            raise Refused(404, f"no row of {label!r} at {req.query_params['start_s']} s in {file!r}")
        return JSONResponse(
            {"card": {**clip, **review.species(label), "name": Path(file).name, "problem": review.problem(file)}}
        )

    # decoding and drawing run in worker threads: a card's picture, its audio and the next queue are served at once
    async def audio(req: Request) -> Response:
        file, start_s, end_s = _clip_of(review, req)
        data = await run_in_threadpool(lambda: wav_bytes(excerpt(file, start_s, end_s)))
        return _ranged(data, req.headers.get("range"), "audio/wav")

    async def spectrogram(req: Request) -> Response:
        file, start_s, end_s = _clip_of(review, req)
        png = await run_in_threadpool(lambda: spectrogram_png(excerpt(file, start_s, end_s), start_s, end_s))
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    async def verdict(req: Request) -> Response:
        body = await _json(req)
        v = _verdict_of(review, body)
        review.store.put([v])
        return JSONResponse({"saved": asdict(v.checked())})

    async def undo(req: Request) -> Response:
        body = await _json(req)
        file = review.check_file(str(body.get("file", "")))
        try:
            taken = review.store.remove(
                file, float(body["start_s"]), float(body["end_s"]), str(body["label"]), str(body.get("reviewer", ""))
            )
        except (KeyError, TypeError, ValueError) as e:
            raise Refused(400, f"undo needs file, start_s, end_s, label ({e})") from None
        return JSONResponse({"removed": taken})

    routes = [
        Route("/", guarded(page)),
        Route("/api/state", guarded(state)),
        Route("/api/queue", guarded(queue)),
        Route("/api/card", guarded(card)),
        Route("/api/audio", guarded(audio)),
        Route("/api/spectrogram", guarded(spectrogram)),
        Route("/api/verdict", guarded(verdict), methods=["POST"]),
        Route("/api/undo", guarded(undo), methods=["POST"]),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(host))])
    app.state.review = review
    return app


def same_origin_json(req: Request) -> None:
    """A write comes from the page: JSON (a form or text/plain POST, which any web page open in the browser may send
    here without asking, is refused: 415), and an Origin, where the browser sends one, of this server (403)."""
    kind = req.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise Refused(415, f"a verdict is sent as application/json, not {kind or 'no content type'}")
    origin = req.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != req.headers.get("host", ""):
        raise Refused(403, f"a verdict from another site ({origin}) is refused")


async def _json(req: Request) -> dict:
    same_origin_json(req)
    try:
        body = await req.json()
    except ValueError:
        raise Refused(400, "the request's body is not JSON") from None
    if not isinstance(body, dict):
        raise Refused(400, "the request's body must be a JSON object")
    return body


def _verdict_of(review: Review, body: dict) -> Verdict:
    file = review.check_file(str(body.get("file", "")))
    label = str(body.get("label", ""))
    other = str(body.get("other_label") or "")
    for name, value in (("label", label), ("other_label", other)):
        if value and value not in review.preds.classes:
            raise Refused(400, f"{name} {value!r} is not a class of the model")
    try:
        start_s, end_s = float(body["start_s"]), float(body["end_s"])
    except (KeyError, TypeError, ValueError) as e:
        raise Refused(400, f"a verdict needs start_s and end_s as numbers ({e})") from None
    verdict = "no" if other else str(body.get("verdict", ""))  # another species: not this one
    v = Verdict(
        file,
        start_s,
        end_s,
        label,
        verdict,
        other,
        str(body.get("reviewer") or ""),
        "",
        review.preds.score_of(file, start_s, label),
    )
    try:
        return v.checked()
    except ReviewError as e:
        raise Refused(400, str(e)) from None


def _ranged(data: bytes, range_header: str | None, media_type: str) -> Response:
    """`data`, or the one byte range the request asks for (206), so that the browser can seek."""
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "max-age=3600"}
    m = _RANGE.match(range_header.strip()) if range_header else None
    if not m or (not m.group(1) and not m.group(2)):
        return Response(data, media_type=media_type, headers=headers)
    size = len(data)
    if m.group(1):
        first, last = int(m.group(1)), int(m.group(2)) if m.group(2) else size - 1
    else:  # the last N bytes
        first, last = max(0, size - int(m.group(2))), size - 1
    if first >= size or last < first:
        return Response(b"", status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    last = min(last, size - 1)
    return Response(
        data[first : last + 1],
        status_code=206,
        media_type=media_type,
        headers={**headers, "Content-Range": f"bytes {first}-{last}/{size}"},
    )


def check_port_free(host: str, port: int) -> None:
    """A ReviewError saying so if `port` on `host` cannot be bound (in use, or not this machine's address)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ReviewError(f"--host {host}: not an address of this machine ({e})") from e
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise ReviewError(
                f"port {port} on {host} is in use (or not allowed: {e.strerror}): choose another with --port"
            ) from None


def serve(pred: str | Path, host: str, port: int, open_browser: bool, output: str | None = None, say=print) -> None:
    """Serve the review page of PRED until interrupted (Ctrl-C); every verdict is already on disk."""
    import uvicorn

    app = build_app(pred, output, host)
    check_port_free(host, port)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    n = len(app.state.review.preds.rows)
    say(
        f"review {pred}: {n} rows of {len(app.state.review.preds.classes)} species ({app.state.review.preds.output});"
        f" verdicts in {app.state.review.store.path}"
    )
    say(f"open {url}  (Ctrl-C stops; verdicts are saved as they are given)")
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    server = _uvicorn_server()(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    try:
        server.run()
        if server.stopped_by == signal.SIGINT:  # uvicorn gives Ctrl-C to asyncio's handler, which may let it go
            raise KeyboardInterrupt
    except KeyboardInterrupt as stop:  # and SIGTERM (errors.Terminated): exit 130 / 143, as every verb
        stop.add_note("Every verdict given is saved.")
        raise


def _uvicorn_server():
    import uvicorn

    class StopSaid(uvicorn.Server):
        """uvicorn's server, keeping the signal that stopped it."""

        stopped_by: int | None = None

        def handle_exit(self, sig: int, frame) -> None:
            self.stopped_by = self.stopped_by or sig
            super().handle_exit(sig, frame)

    return StopSaid

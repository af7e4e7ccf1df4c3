"""The `birdsed` command line: one subcommand per verb, thin (parse, call the library)."""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

from birdsed import __version__
from birdsed.errors import BirdsedError

console = Console(stderr=True, soft_wrap=True)  # long paths in messages stay whole, never wrapped mid-word
AddArgs = Callable[[argparse.ArgumentParser], None]
VERBS: dict[str, tuple[str, str, AddArgs, Callable[[argparse.Namespace], int]]] = {}


def verb(name: str, help: str, example: str, add_args: AddArgs):
    """Register `fn(args) -> int` as the verb `name`; `example` is shown in its --help."""

    def wrap(fn):
        VERBS[name] = (help, example, add_args, fn)
        return fn

    return wrap


def batch_status(n_skipped: int, report: Path, what: str = "recording(s) failed") -> int:
    """The batch rule every verb follows: 0 all done, 1 done with skipped items (said, with where they are listed);
    2 (refused) is main's, for errors."""
    if n_skipped:
        console.print(f"[yellow]{n_skipped} {what}: see {report}")
        return 1
    return 0


def _add_synth(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="folder to write the data set into")
    p.add_argument("--species", type=int, default=6)
    p.add_argument("--clips-per-species", type=int, default=10)
    p.add_argument("--soundscapes", type=int, default=4, help="test recordings (the last one is a site_3 file)")
    p.add_argument("--soundscape-s", type=float, default=120.0, help="length of each soundscape in seconds")
    p.add_argument("--min-clip-s", type=float, default=3.0)
    p.add_argument("--max-clip-s", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--soundscape-rate", type=int, default=32000, help="sample rate of the test mp3s")
    p.add_argument("--soundscape-seed", type=int, help="other soundscapes of the same species (default: --seed)")
    p.add_argument(
        "--shift",
        type=float,
        default=0.0,
        help="domain shift of the soundscapes: quieter, reverberant calls and an insect chorus (0 none, 1 strong)",
    )


@verb(
    "synth",
    "write a synthetic data set in the Kaggle layout",
    "birdsed synth data/synth --species 6 --clips-per-species 10 --soundscapes 4 --seed 0",
    _add_synth,
)
def cmd_synth(a: argparse.Namespace) -> int:
    from birdsed.synth import SynthConfig, synthesize

    cfg = SynthConfig(
        a.species,
        a.clips_per_species,
        a.soundscapes,
        a.soundscape_s,
        a.min_clip_s,
        a.max_clip_s,
        a.seed,
        a.soundscape_rate,
        a.soundscape_seed,
        a.shift,
    )
    synthesize(a.out, cfg)
    console.print(
        f"synthetic data set written to {a.out} (train.csv, train_audio/, test.csv, test_audio/, test_labels.csv)"
    )
    return 0


def _add_prepare(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "data", type=Path, help="a data-set folder (Cornell train.csv, BirdCLEF train_metadata.csv or labels.csv)"
    )
    p.add_argument("--out", type=Path, required=True, help="store folder (created; a re-run resumes)")
    p.add_argument("--format", default="auto", choices=["auto", "cornell", "birdclef", "labels"])
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    p.add_argument(
        "--allow-outside-paths",
        action="store_true",
        help="open files the table names outside its audio folder (refused by default)",
    )


@verb(
    "prepare",
    "decode and resample every recording once into a memory-mapped 32 kHz store",
    "birdsed prepare ../shared/data/nips4b --out stores/nips4b",
    _add_prepare,
)
def cmd_prepare(a: argparse.Namespace) -> int:
    from birdsed.manifest import read_dataset
    from birdsed.store import prepare

    manifest = read_dataset(a.data, a.format, allow_outside=a.allow_outside_paths)
    result = prepare(manifest, a.out, workers=a.workers)
    console.print(result.summary())
    return batch_status(result.n_skipped, a.out / "report.csv", "recording(s) skipped")


def build_parser() -> argparse.ArgumentParser:
    _register_all()
    parser = argparse.ArgumentParser(
        prog="birdsed",
        description="Find which bird species call, and when, in audio recordings (sound event detection).",
        epilog="Run `birdsed VERB --help` for each verb's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"birdsed {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name, (help, example, add_args, fn) in VERBS.items():
        p = sub.add_parser(
            name,
            help=help,
            description=help,
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_args(p)
        p.set_defaults(func=fn)
    return parser


def _register_all() -> None:
    """Import the modules that register further verbs (kept separate so this file stays short)."""
    from birdsed import cli_birdnet, cli_model, cli_pseudo  # noqa: F401


OS_ADVICE = {
    errno.ENOSPC: "the disk is full: free space there (what was finished is kept; the same command resumes)",
    errno.EDQUOT: "the disk quota is used up: free space there (the same command resumes)",
    errno.EACCES: "permission denied: change the folder's permissions or write elsewhere",
    errno.EPERM: "operation not permitted: change the folder's permissions or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere (--out)",
}


def os_error_message(e: OSError) -> str:
    """An OSError as one line naming the path and what to do."""
    where = e.filename or "a file"
    advice = OS_ADVICE.get(e.errno, e.strerror or str(e))
    return f"{where}: {advice}" + (f" [{e.strerror}]" if e.errno in OS_ADVICE and e.strerror else "")


@contextlib.contextmanager
def c_stderr_off(off: bool):
    """Decoder libraries (libmpg123 in libsndfile) print notes such as "Illegal Audio-MPEG-Header" to file
    descriptor 2 from C, over the progress bar; birdsed reports such files itself. While `off`, descriptor 2 goes
    to /dev/null and Python's own stderr (messages, progress, tracebacks) to a copy of the real one. With -v the
    decoders' notes stay on the console. Only when stderr is the process's real descriptor 2 (not under a capture)."""
    try:
        real = off and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        real = False
    if not real:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    py_stderr, sys.stderr = sys.stderr, os.fdopen(os.dup(saved), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        sys.stderr.close()
        sys.stderr = py_stderr


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
    )
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "torch"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        with c_stderr_off(not args.verbose):
            return int(args.func(args) or 0)
    except BirdsedError as e:
        console.print(f"[red]error:[/red] {e}")
        return 2
    except OSError as e:  # disk full, permissions, a read-only file system: one line, what was finished stays
        console.print(f"[red]error:[/red] {os_error_message(e)}")
        return 2
    except KeyboardInterrupt:
        console.print("[red]interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())

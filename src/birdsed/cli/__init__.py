"""The `birdsed` command line: one subcommand per verb, thin (parse, call the library).

registry.py holds the registry and the console; each module registers its verbs: data.py (synth, prepare, demo),
train.py, predict.py (predict, merge), evaluate.py (evaluate, tune, report), model.py (export, ensemble, kaggle),
birdnet.py (init, species), summary.py, pseudo.py (pseudo-label, self-train); result_tables.py prints results.
Library modules are imported inside the handlers, so that `birdsed --help` and each verb load only what they use.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import signal
import sys
import threading

from rich.logging import RichHandler

from birdsed import __version__
from birdsed.cli.registry import VERBS, batch_status, console, verb  # noqa: F401 - the CLI's public names
from birdsed.errors import BirdsedError, Terminated

# exit statuses of a stopped run: 128 + the signal's number, as shells report it
STOPPED = {signal.SIGINT: 130, signal.SIGTERM: 143}


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
        # also after the verb (birdsed predict ... -v); SUPPRESS keeps a -v given before it
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
        p.set_defaults(func=fn)
    return parser


def _register_all() -> None:
    """Import every module that registers verbs (in the order `birdsed --help` lists them)."""
    import importlib

    for name in (
        "data",
        "train",
        "predict",
        "evaluate",
        "summary",
        "review",
        "search",
        "learn",
        "model",
        "birdnet",
        "pseudo",
    ):
        importlib.import_module(f"birdsed.cli.{name}")


OS_ADVICE = {
    errno.ENOSPC: "the disk is full: free space there (what was finished is kept; the same command resumes)",
    errno.EDQUOT: "the disk quota is used up: free space there (the same command resumes)",
    errno.EACCES: "permission denied: change the folder's permissions or write elsewhere",
    errno.EPERM: "operation not permitted: change the folder's permissions or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere (--out)",
}


def error_message(e: BirdsedError) -> str:
    """A birdsed error as its own words: one raised in a DataLoader worker comes back wrapped by torch ("Caught
    StoreError in DataLoader worker process 0." and the worker's traceback); its last line is the message."""
    text = str(e)
    if "\nOriginal Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    name = f"{type(e).__module__}.{type(e).__qualname__}: "
    return last.removeprefix(name)


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


def signed_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """`argv` with an option that takes one value, followed by a value starting with "-" and a digit, written
    OPTION=VALUE: argparse takes "-33.9,151.2" (a southern --site) or "-03:00" (a --timezone) for an option and
    says "expected one argument" (no option of birdsed's starts with "-" and a digit)."""
    parsers = [parser]
    parsers += [c for a in parser._actions if isinstance(a, argparse._SubParsersAction) for c in a.choices.values()]

    def takes_one_value(option: str) -> bool:
        """In some parser, `option` or the one option it abbreviates (argparse's --sit for --site) takes a value."""
        for p in parsers:
            actions = p._option_string_actions
            if option in actions:
                named = {actions[option]}
            elif option.startswith("--") and p.allow_abbrev:
                named = {a for o, a in actions.items() if o.startswith(option)}
            else:
                continue
            if len(named) == 1 and next(iter(named)).nargs is None and next(iter(named)).option_strings:
                return True
        return False

    out: list[str] = []
    for token in argv:
        if out and token[:1] == "-" and token[1:2].isdigit() and takes_one_value(out[-1]):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(signed_values(parser, sys.argv[1:] if argv is None else [str(a) for a in argv]))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
    )
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "torch"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        with terminate_as_interrupt(), c_stderr_off(not args.verbose):
            return int(args.func(args) or 0)
    except BirdsedError as e:
        console.print(f"error: {error_message(e)}", style="red")
        return 2
    except OSError as e:  # disk full, permissions, a read-only file system: one line, what was finished stays
        console.print(f"error: {os_error_message(e)}", style="red")
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: one line, what the verb kept and how to go on (its notes)
        sig = signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT
        console.print(" ".join([f"stopped by {sig.name}.", *getattr(e, "__notes__", [])]), style="red")
        end_workers()
        return STOPPED[sig]


def end_workers() -> None:
    """Kill the worker processes a stopped verb leaves (a data loader's, a decoding pool's): they ignore Ctrl-C and
    SIGTERM (train.run.quiet_worker), so when the stop came to the main process alone, with their loader not shut
    down, Python's exit waited on them for ever (its SIGTERM to daemonic children was ignored too). Whatever they
    did is redone by the resumed run, as after kill -9."""
    import multiprocessing

    workers = multiprocessing.active_children()
    if workers and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # torch's handler would raise on each worker killed here
    for w in workers:
        w.kill()
    for w in workers:
        w.join(10)


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@contextlib.contextmanager
def terminate_as_interrupt():
    """While inside, SIGTERM stops a verb the way Ctrl-C does (errors.Terminated); in the main thread only, the
    previous handler back on leaving."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)

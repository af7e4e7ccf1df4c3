"""Every module imports alone (no import cycle), and the CLI lists every verb however it is started."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import birdsed

MODULES = sorted(m.name for m in pkgutil.walk_packages(birdsed.__path__, "birdsed.") if not m.name.endswith("__main__"))


@pytest.mark.parametrize("batch", [MODULES[i : i + 12] for i in range(0, len(MODULES), 12)])
def test_every_module_imports_alone_in_a_fresh_interpreter(batch):
    code = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "    for m in [m for m in sys.modules if m.startswith('birdsed')]:\n"
        "        del sys.modules[m]\n"
    )
    res = subprocess.run([sys.executable, "-c", code, *batch], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.mark.parametrize("entry", [["-m", "birdsed"], ["-m", "birdsed.cli"]])
def test_the_cli_lists_every_verb_however_it_is_started(entry):
    from birdsed.cli import VERBS, build_parser

    build_parser()
    out = subprocess.run([sys.executable, *entry, "--help"], capture_output=True, text=True, check=True).stdout
    assert len(VERBS) >= 15 and all(name in out for name in VERBS), out

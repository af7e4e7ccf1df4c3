"""The Kaggle workflow through the official `kaggle` package: competition data in, models out as data sets.

The seed fetched data with `kaggle competitions download -c birdsong-recognition` and
published weights with `kaggle datasets create -p DIR` (later `version`). These functions
do the same, checking credentials first and saying exactly what is missing.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

from birdsed.errors import BirdsedError
from birdsed.fsutil import write_text_atomic

log = logging.getLogger(__name__)
COMPETITION = "birdsong-recognition"
DEFAULT_LICENSE = "CC-BY-SA-4.0"  # a data set of birdsed's own models (Kaggle's name)


class KaggleError(BirdsedError):
    """Kaggle credentials are missing, the package is absent, or the service cannot be reached."""


def kaggle_dataset_folder(
    model_dir: str | Path,
    out: str | Path,
    dataset_id: str,
    title: str | None = None,
    license_name: str | None = None,
) -> Path:
    """A folder `kaggle datasets create -p` accepts: the model files and dataset-metadata.json. Its licence is the one
    the model must carry (BirdNET V2.4's CC BY-NC-SA 4.0 for a model that runs or holds its weights: meta.
    required_licences), else `license_name` (default CC BY-SA 4.0); another licence for such a model is refused."""
    from birdsed.model.meta import copy_model_dir, required_licences

    model_dir, out = Path(model_dir), Path(out)
    required = min(required_licences(model_dir), default=None)  # a folder that is not a model is refused here
    if "/" not in dataset_id or len(dataset_id.split("/")) != 2 or not all(dataset_id.split("/")):
        raise BirdsedError(f"Kaggle data set id must be owner/slug, got {dataset_id!r}")
    if required and license_name not in (None, required):
        raise BirdsedError(f"{model_dir} must be shared under {required}, not {license_name}")
    license_name = required or license_name or DEFAULT_LICENSE
    copy_model_dir(model_dir, out)  # an ensemble's members travel inside it
    meta = {
        "title": title or f"birdsed model {dataset_id.split('/')[1]}",
        "id": dataset_id,
        "licenses": [{"name": license_name}],
    }
    write_text_atomic(out / "dataset-metadata.json", json.dumps(meta, indent=2))
    return out


def credentials_problem(env: dict[str, str] | None = None, home: Path | None = None) -> str | None:
    """None when the kaggle client can find credentials, else what is missing and how to fix it."""
    env = dict(os.environ) if env is None else env
    if env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY") or env.get("KAGGLE_API_TOKEN"):
        return None
    config_dir = Path(env["KAGGLE_CONFIG_DIR"]) if env.get("KAGGLE_CONFIG_DIR") else (home or Path.home()) / ".kaggle"
    if (config_dir / "kaggle.json").is_file() or (config_dir / "access_token").is_file():
        return None
    return (
        f"no Kaggle credentials: {config_dir / 'kaggle.json'} does not exist and KAGGLE_USERNAME/KAGGLE_KEY are "
        "not set. Create an API token on kaggle.com (Settings > API > Create New Token), save it as "
        f"{config_dir / 'kaggle.json'} (chmod 600), or export KAGGLE_USERNAME and KAGGLE_KEY."
    )


def get_api(client: Any = None) -> Any:
    """An authenticated KaggleApi (or the given stand-in with the same interface)."""
    problem = credentials_problem()
    if problem:
        raise KaggleError(problem)
    if client is not None:
        return client
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as e:
        raise KaggleError(
            "the kaggle package is not installed: pip install 'birdsed[kaggle]' (or pip install kaggle)"
        ) from e
    api = KaggleApi()
    try:
        api.authenticate()
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the client raises SystemExit or its own errors
        raise KaggleError(f"Kaggle authentication failed ({e}); check your token") from e
    return api


def _network(what: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except KaggleError:
        raise
    except Exception as e:  # noqa: BLE001 - requests/HTTP errors of many types
        raise KaggleError(
            f"{what} failed ({type(e).__name__}: {e}). Is this machine online? Kaggle's API needs "
            "internet access; offline, copy the data in by hand."
        ) from e


def download(
    out: str | Path, competition: str | None = COMPETITION, dataset: str | None = None, client: Any = None
) -> Path:
    """Download and unpack a competition's files (or a user data set) into `out`."""
    out = Path(out)
    api = get_api(client)
    out.mkdir(parents=True, exist_ok=True)
    if dataset:
        _network(f"downloading data set {dataset}", api.dataset_download_files, dataset, path=str(out), quiet=False)
    else:
        _network(
            f"downloading competition {competition}",
            api.competition_download_files,
            competition,
            path=str(out),
            quiet=False,
        )
    for z in sorted(out.glob("*.zip")):
        log.info("unpacking %s", z.name)
        with zipfile.ZipFile(z) as zf:
            zf.extractall(out)
        z.unlink()
    return out


def publish(
    model_dir: str | Path,
    dataset_id: str,
    message: str = "new version",
    folder: str | Path | None = None,
    dry_run: bool = False,
    public: bool = False,
    client: Any = None,
) -> tuple[Path, str]:
    """Write the data-set folder and create the data set, or a new version when it exists.

    Returns (folder, action) with action one of "dry-run", "created", "versioned".
    """
    folder = kaggle_dataset_folder(model_dir, folder or Path(model_dir).parent / "kaggle-dataset", dataset_id)
    if dry_run:
        return folder, "dry-run"
    api = get_api(client)
    try:
        api.dataset_status(dataset_id)
        exists = True
    except Exception:  # noqa: BLE001 - a missing data set comes back as an HTTP error
        exists = False
    if exists:
        _network(f"uploading a new version of {dataset_id}", api.dataset_create_version, str(folder), message)
        return folder, "versioned"
    _network(f"creating data set {dataset_id}", api.dataset_create_new, str(folder), public=public)
    return folder, "created"

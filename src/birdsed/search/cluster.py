"""`embed --cluster`: the recordings embedded on a dask.distributed cluster (local:N, tcp://HOST:PORT, FILE.yaml, as
`predict --cluster`: infer/cluster.py connects, starts the workers loading the model, and closes). Chunks of files of
about equal size go out, 16 per worker; each worker runs embed's loop (embed.embed_files) over its chunk and writes
each recording's part into DB/parts (a shared file system for workers on other machines); the client commits the
parts into segments afterwards, as on one machine. A worker that dies mid-chunk loses only what it had not written:
the chunk runs again elsewhere and skips the parts that exist.
"""

from __future__ import annotations

from pathlib import Path

from birdsed.progress import progress_bar


def embed_chunk(
    model_dir: str, files: list[str], parts: list[str], options: dict
) -> list[tuple[str, float | None, str]]:
    """On a worker: embed `files` whose parts are not there yet, writing each part; (file, duration_s, "") for each
    embedded, (file, None, reason) for each that failed to decode."""
    from birdsed.infer.cluster_worker import _MODELS, load_on_worker
    from birdsed.search.embed import FileEmbeddings, embed_files, write_part

    part_of = dict(zip(files, map(Path, parts)))
    todo = [f for f in files if not part_of[f].is_file()]
    if not todo:
        return []
    load_on_worker(model_dir)
    out = []
    for res in embed_files(_MODELS[model_dir], todo, quiet=True, workers=0, **options):
        if isinstance(res, FileEmbeddings):
            write_part(res, part_of[res.path])
            out.append((res.path, res.duration_s, ""))
        else:
            out.append((res[0], None, res[1]))
    return out


def embed_on_cluster(
    spec: str, model_dir: Path, files: list[str], part_of: dict[str, Path], options: dict, quiet: bool = False
) -> tuple[float, list[tuple[str, str]]]:
    """Embed `files` on the cluster `spec` into their parts; (seconds of audio embedded, decode errors)."""
    from distributed import as_completed

    from birdsed.infer.cluster import ClusterRun
    from birdsed.infer.shard import partition

    with ClusterRun(spec, model_dir) as run:
        client = run.client
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        chunks = [c for c in partition(files, min(len(files), n_workers * run.tasks_per_worker)) if c]
        futures = {
            client.submit(
                embed_chunk,
                run.model_dir,
                c,
                [str(part_of[f]) for f in c],
                options,
                key=f"birdsed-embed-{i}-{len(chunks)}",
                retries=2,
                pure=False,
            ): len(c)
            for i, c in enumerate(chunks)
        }
        audio_s, errors = 0.0, []
        with progress_bar(len(files), f"embed on {n_workers} worker(s)", disable=quiet) as advance:
            for fut in as_completed(list(futures)):
                for f, duration, reason in fut.result():
                    if duration is None:
                        errors.append((f, reason))
                    else:
                        audio_s += duration
                advance(futures[fut])
    return audio_s, errors

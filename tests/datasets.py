"""Data in the shapes the Hugging Face tools write it: parquet, arrow (IPC stream and file), CSV,
`save_to_disk` folders, and a hub cache with a dataset snapshot in it (as `hf download` leaves it)."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path


def write_parquet(path: Path, rows: list[dict], row_group_size: int | None = None) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def write_arrow(path: Path, rows: list[dict], *, stream: bool = True) -> Path:
    import pyarrow as pa
    import pyarrow.ipc as ipc

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(path), "wb") as sink:
        writer = ipc.new_stream(sink, table.schema) if stream else ipc.new_file(sink, table.schema)
        writer.write_table(table, max_chunksize=2)  # several record batches
        writer.close()
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def save_to_disk(folder: Path, splits: dict[str, list[dict]]) -> Path:
    """A DatasetDict saved by the datasets library itself."""
    import datasets

    datasets.disable_progress_bars()
    datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()}).save_to_disk(
        str(folder))
    return folder


def hub_dataset(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = "abc123") -> Path:
    """A dataset in a hub cache: its files as blobs, the snapshot as links to them, refs/main -> commit."""
    repository = cache / f"datasets--{repo_id.replace('/', '--')}"
    snapshot = repository / "snapshots" / commit
    for name, data in files.items():
        blob = repository / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (len(Path(name).parts) + 1), "blobs", blob.name))
    (repository / "refs").mkdir(exist_ok=True)
    (repository / "refs" / "main").write_text(commit)
    return cache


def parquet_bytes(tmp: Path, rows: list[dict]) -> bytes:
    path = write_parquet(tmp / "scratch.parquet", rows)
    data = path.read_bytes()
    path.unlink()
    return data

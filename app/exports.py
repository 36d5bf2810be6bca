"""Export jobs: a training set of any size written as Parquet under EXPORT_DIR, or into a warehouse table.

A training request with ``export`` answers 202 at once with a job; the job computes the training set
(streamed from the warehouse where it can be) and writes it batch by batch, counting rows as it goes.
A file is written under a temporary name and renamed when complete, a table in one transaction, so
nothing half-written is ever visible under the name asked for. Jobs live in this process's memory.
"""
from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from catalog.base import utc_now
from common.errors import ExportExists, FeatureStoreError, InvalidInput, NotFound
from sources.definition import check_table_name

log = logging.getLogger(__name__)
Batches = tuple[pa.Schema, Iterator[pa.RecordBatch]]
KEPT_JOBS = 1000  # finished jobs remembered (oldest forgotten first)


@dataclass(frozen=True)
class ExportTarget:
    """Where an export goes: `path` (a Parquet file under EXPORT_DIR) or `table` (in the warehouse)."""

    path: str | None = None
    table: str | None = None
    overwrite: bool = False


@dataclass
class Job:
    """One export: its state, the rows written so far and, when done, where and how many (or the error)."""

    job_id: str
    target: ExportTarget
    created_at: str = field(default_factory=utc_now)
    status: str = "running"  # running, succeeded, failed
    rows_written: int = 0
    finished_at: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "kind": "export", "status": self.status, "created_at": self.created_at,
                "finished_at": self.finished_at, "progress": {"rows_written": self.rows_written},
                "target": {"path": self.target.path, "table": self.target.table},
                "result": self.result, "error": self.error}


def parse_target(body: Any) -> ExportTarget:
    """The `export` object of a training request, checked: exactly one of path or table."""
    if not isinstance(body, dict) or set(body) - {"path", "table", "overwrite"}:
        raise InvalidInput("export must be {path: 'name.parquet'} or {table: 'name'}, with optional overwrite")
    path, table = body.get("path"), body.get("table")
    if (path is None) == (table is None):
        raise InvalidInput("export needs exactly one of path or table")
    if path is not None:
        parts = PurePosixPath(path).parts if isinstance(path, str) else ()
        if not isinstance(path, str) or not path.endswith(".parquet") or path.startswith("/") or not parts or \
                any(part in ("..", ".") or part.startswith(".") for part in parts) or "\\" in path or "\x00" in path:
            raise InvalidInput("export.path must be a relative path of a .parquet file inside EXPORT_DIR "
                               "(no '..', no hidden parts)", {"path": str(path)[:200]})
    if table is not None:
        check_table_name(table)
    if not isinstance(body.get("overwrite", False), bool):
        raise InvalidInput("export.overwrite must be true or false")
    return ExportTarget(path, table, bool(body.get("overwrite", False)))


class ExportJobs:
    """Runs export jobs on a small pool of threads and remembers their state."""

    def __init__(self, export_dir: Path, warehouse: Any, reserved_tables: Callable[[], set[str]], workers: int = 2):
        self.export_dir = export_dir
        self.warehouse = warehouse
        self.reserved_tables = reserved_tables
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="export")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def submit(self, target: ExportTarget, make: Callable[[], Batches]) -> Job:
        """Check the target, then compute `make()` and write it in the background; the job, running."""
        self._check_free(target)
        job = Job("job_" + secrets.token_hex(10), target)
        with self._lock:
            self._jobs[job.job_id] = job
            finished = [j for j in self._jobs.values() if j.status != "running"]
            for old in finished[:max(0, len(finished) - KEPT_JOBS)]:
                del self._jobs[old.job_id]
        self._pool.submit(self._run, job, make)
        return job

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id} (jobs are kept in the server's memory until it restarts)",
                           {"job_id": job_id}, code="job_not_found")
        return job

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _check_free(self, target: ExportTarget) -> None:
        if target.table is not None:
            if target.table in self.reserved_tables():
                raise InvalidInput(f"{target.table!r} is a source's table; export into a table of its own")
            if self.warehouse.table_columns(target.table) is not None and not target.overwrite:
                raise ExportExists(f"the warehouse has a table {target.table!r} already (overwrite: true replaces it)",
                                   {"table": target.table})
        elif (self.export_dir / target.path).exists() and not target.overwrite:
            raise ExportExists(f"{target.path} exists already under EXPORT_DIR (overwrite: true replaces it)",
                               {"path": target.path})

    def _run(self, job: Job, make: Callable[[], Batches]) -> None:
        started = time.monotonic()
        try:
            schema, batches = make()
            counted = self._counted(job, batches)
            if job.target.path is not None:
                result = self._write_file(job.target, schema, counted)
            else:
                self.warehouse.write_table(job.target.table, schema, counted, replace=job.target.overwrite)
                result = {"table": job.target.table}
            job.result = {**result, "rows": job.rows_written, "format": "parquet" if job.target.path else "table",
                          "seconds": round(time.monotonic() - started, 3)}
            job.status = "succeeded"
        except FeatureStoreError as error:
            job.error, job.status = error.to_dict(), "failed"
        except Exception:  # noqa: BLE001 - a job's failure is reported in the job, never lost
            log.exception("export %s failed", job.job_id)
            job.error = {"code": "internal_error", "message": "the export failed; see the server's log", "details": {}}
            job.status = "failed"
        finally:
            job.finished_at = utc_now()

    @staticmethod
    def _counted(job: Job, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield batch
            job.rows_written += batch.num_rows

    def _write_file(self, target: ExportTarget, schema: pa.Schema, batches: Iterator[pa.RecordBatch]
                    ) -> dict[str, Any]:
        final = self.export_dir / target.path
        self.export_dir.mkdir(parents=True, exist_ok=True)
        if not final.parent.resolve().is_relative_to(self.export_dir.resolve()):  # before creating any folder
            raise InvalidInput("export.path leaves EXPORT_DIR through a link", {"path": target.path})
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(f".{final.name}.{secrets.token_hex(4)}.partial")
        try:
            with pq.ParquetWriter(str(partial), schema) as writer:
                for batch in batches:
                    writer.write_batch(batch)
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)
        return {"path": target.path, "bytes": final.stat().st_size}

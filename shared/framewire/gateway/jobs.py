"""Reprocess jobs, ``/api/v1/reprocess``: re-run one camera's retained frames of a time range
through the pipeline (``framewire replay``'s code, ``framewire.ops.logreplay``), and watch
their progress.

Jobs run one at a time in a thread of the gateway process, in the order they were asked
for. Each job's state is a JSON file (0600) under ``FRAMEWIRE_HOME/state/reprocess``, so a
restarted gateway still lists them; a job the gateway was running (or had queued) when it
stopped is marked failed, saying so. ``results_stored`` is counted when a job is read: how
many of its replayed frames have a stored result from the model the site runs now.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import Message
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from framewire.config import Settings
from framewire.contracts import FrameCaptured, check_camera_id
from framewire.contracts.codec import make_codec
from framewire.errors import ConfigError, DataError, FramewireError
from framewire.gateway.app import GatewayState
from framewire.gateway.audit import audit
from framewire.gateway.auth import Operator, Viewer, who
from framewire.store.db import Database

log = logging.getLogger(__name__)

State = Literal["queued", "running", "done", "failed"]
SAVE_EVERY_S = 0.5  # a running job's file is rewritten at most this often
MODEL_TTL_S = 2.0  # how long the model the site runs is taken as known


class ReprocessRequest(BaseModel):
    """One camera's frames to run through the pipeline again."""

    camera: str = Field(min_length=1, max_length=200, description="the camera id")
    since: str = Field(description="start (inclusive): an ISO time (no zone: UTC) or a "
                       "duration ago: 30m, 2h, 1d")
    until: str = Field("now", description="end (exclusive), as since")


@dataclass
class ReprocessJob:
    """A job's state as its file keeps it; ``as_json`` is what the API shows."""

    job_id: str
    camera: str
    since: datetime
    until: datetime
    by: str
    created_at: datetime
    state: State = "queued"
    records_found: int = 0
    records_replayed: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    replay_id: str | None = None
    frame_ids: list[str] = field(default_factory=list)

    def as_json(self, results_stored: int, model: tuple[str, str] | None) -> dict[str, Any]:
        data = {f.name: _plain(getattr(self, f.name)) for f in fields(self)
                if f.name != "frame_ids"}
        return {**data, "results_stored": results_stored,
                "model_name": model[0] if model else None,
                "model_version": model[1] if model else None}

    def save(self, folder: Path) -> None:
        """Write the job's file atomically, readable by its user alone."""
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = {f.name: _plain(getattr(self, f.name)) for f in fields(self)}
        temp = folder / f".{self.job_id}.json.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(data, out)
        os.replace(temp, folder / f"{self.job_id}.json")

    @classmethod
    def load(cls, path: Path) -> ReprocessJob:
        data = json.loads(path.read_text())
        for name in ("since", "until", "created_at", "started_at", "finished_at"):
            if data.get(name):
                data[name] = datetime.fromisoformat(data[name])
        return cls(**data)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return list(value) if isinstance(value, list) else value


class ReprocessJobs:
    """The site's reprocess jobs: kept in files, run one at a time by a worker thread."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings, self.db = settings, db
        self.folder = settings.home.resolve() / "state" / "reprocess"
        self._lock = threading.Lock()
        self._queue: queue.Queue[str] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._model: tuple[float, tuple[str, str] | None] = (0.0, None)
        self.jobs: dict[str, ReprocessJob] = {}
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            try:
                job = ReprocessJob.load(path)
            except (OSError, ValueError, TypeError) as exc:
                log.error("unreadable reprocess job file skipped", extra={
                    "path": str(path), "error": str(exc)})
                continue
            if job.state in ("queued", "running"):
                job.error = (f"the gateway stopped while the job was {job.state}; start it "
                             "again (frames already replayed are replaced in place, never "
                             "stored twice)")
                job.state, job.finished_at = "failed", job.finished_at or datetime.now(UTC)
                job.save(self.folder)
            self.jobs[job.job_id] = job

    def submit(self, camera: str, since: datetime, until: datetime, by: str) -> ReprocessJob:
        """Queue a job; it runs after the jobs before it."""
        now = datetime.now(UTC)
        job = ReprocessJob(f"{now.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}", camera,
                           since, until, by, now)
        with self._lock:
            job.save(self.folder)
            self.jobs[job.job_id] = job
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="reprocess",
                                                daemon=True)
                self._worker.start()
        self._queue.put(job.job_id)
        return job

    def _work(self) -> None:
        while True:
            job = self.jobs[self._queue.get()]
            try:
                self._run(job)
            except Exception as exc:  # a job's failure is the job's, never the gateway's
                log.exception("reprocess job failed", extra={"job_id": job.job_id})
                job.error = job.error or f"{type(exc).__name__}: {exc}"
                job.state = "failed"
            job.finished_at = datetime.now(UTC)
            job.save(self.folder)

    def _run(self, job: ReprocessJob) -> None:
        from framewire.ops.logreplay import replay

        codec = make_codec(self.settings.schema_registry_url, self.settings.schema_registry_auth)
        job.state, job.started_at = "running", datetime.now(UTC)
        job.save(self.folder)
        saved = time.monotonic()

        def replayed(msg: Message) -> None:
            nonlocal saved
            job.records_found += 1
            # one that does not decode is replayed as it is: preprocess dead-letters it again
            with contextlib.suppress(DataError):
                job.frame_ids.append(codec.decode(msg.value(), FrameCaptured).frame_id)
            job.records_replayed += 1
            if time.monotonic() - saved >= SAVE_EVERY_S:
                saved = time.monotonic()
                job.save(self.folder)

        try:
            counts = replay(self.settings, "frames.raw", job.since, job.until, job.camera,
                            on_record=replayed)
        except FramewireError as exc:
            job.state, job.error = "failed", str(exc)
            return
        # every record produced again was acknowledged (replay flushes before it returns)
        job.records_replayed = counts.republished
        job.replay_id, job.state = counts.replay_id, "done"

    def current_model(self) -> tuple[str, str] | None:
        """The name and version of the model the site runs now (the control topic's, else
        the configured one), looked up at most every MODEL_TTL_S."""
        from framewire.ops.model import model_state

        at, model = self._model
        if time.monotonic() - at < MODEL_TTL_S:
            return model
        try:
            state = model_state(self.settings)
            model = ((state["model_name"], state["model_version"])
                     if state["model_name"] else None)
        except FramewireError as exc:
            log.warning("model not known: results_stored not counted", extra={
                "error": str(exc)})
            model = None
        self._model = (time.monotonic(), model)
        return model

    def shown(self, job: ReprocessJob) -> dict[str, Any]:
        """The job as the API shows it, with ``results_stored`` counted now."""
        model = self.current_model()
        stored = self.db.count_from_model(list(job.frame_ids), *model) \
            if model and job.frame_ids else 0
        return job.as_json(stored, model)


def register(api: APIRouter, state: GatewayState) -> None:
    """Add the reprocess routes to ``api``."""
    settings = state.settings
    jobs = ReprocessJobs(settings, state.db)

    @api.post("/reprocess", status_code=202, tags=["reprocess"],
              responses={409: {}, 422: {}})
    def start_reprocess(request: ReprocessRequest, token: Operator) -> dict[str, str]:
        """Start a job that re-runs one camera's retained frames of [since, until) through
        the pipeline (`framewire replay`): 202 with its `job_id`. 409 on the embedded
        broker, which keeps no history (Apache Kafka does)."""
        from framewire.ops.logranges import parse_time
        from framewire.ops.logreplay import embedded_refusal

        refusal = embedded_refusal(settings, "replay")
        if refusal:
            raise HTTPException(409, refusal.replace("framewire replay", "reprocess"))
        now = datetime.now(UTC)
        try:
            check_camera_id(request.camera, None)
            since = parse_time(request.since, now, "since")
            until = parse_time(request.until, now, "until")
        except (ConfigError, DataError) as exc:
            raise HTTPException(422, str(exc)) from None
        except (OverflowError, ValueError):  # a duration longer than datetime reaches
            raise HTTPException(422, "since or until lies before year 1: give a shorter "
                                "duration or a later time") from None
        if since >= until:
            raise HTTPException(422, f"since {since.isoformat()} is not before until "
                                f"{until.isoformat()}: nothing to reprocess")
        job = jobs.submit(request.camera, since, until, who(token))
        audit(state.home, who(token), "reprocess.start", job_id=job.job_id,
              camera=job.camera, since=since.isoformat(), until=until.isoformat())
        return {"job_id": job.job_id}

    @api.get("/reprocess", tags=["reprocess"])
    def list_reprocess(_: Viewer) -> list[dict[str, Any]]:
        """Every reprocess job, newest first, with its progress."""
        return [jobs.shown(j) for j in sorted(jobs.jobs.values(),
                                              key=lambda j: j.created_at, reverse=True)]

    @api.get("/reprocess/{job_id}", tags=["reprocess"], responses={404: {}})
    def get_reprocess(job_id: str, _: Viewer) -> dict[str, Any]:
        """One job: state (queued, running, done, failed), records found and replayed, how
        many of them have a stored result from the model the site runs now, times, error."""
        job = jobs.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no reprocess job {job_id}; `GET /api/v1/reprocess` "
                                "lists them")
        return jobs.shown(job)

"""The trigger that waits for a fine-tuning job in the triggerer, so no worker slot is held while it runs.

It polls the backend every `poll_seconds` (async HTTP for the API, the job's status file for a local
command) and fires one event: the job's terminal status with its last view, or `timed_out` at the
deadline. Its kwargs hold ids and paths only: the API key is read from the Airflow connection inside the
triggerer, never serialised into the trigger row.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from airflow.triggers.base import BaseTrigger, TriggerEvent

MAX_POLL_ERRORS = 5  # consecutive failed polls (network, 5xx) before the job is reported as failed


class FineTuneJobTrigger(BaseTrigger):
    def __init__(self, *, job_key: str, backend: str, job_id: str, lake: str, connection_id: str | None = None,
                 poll_seconds: float = 60.0, deadline: str | None = None):
        super().__init__()
        self.job_key, self.backend, self.job_id, self.lake = job_key, backend, job_id, lake
        self.connection_id, self.poll_seconds, self.deadline = connection_id, float(poll_seconds), deadline

    def serialize(self):
        return ("feedback_loop.retrain.triggers.FineTuneJobTrigger",
                {"job_key": self.job_key, "backend": self.backend, "job_id": self.job_id, "lake": self.lake,
                 "connection_id": self.connection_id, "poll_seconds": self.poll_seconds, "deadline": self.deadline})

    async def _client(self):
        from feedback_loop.retrain.finetune_backends import CommandBackend, openai_from_connection
        from feedback_loop.settings import Settings

        if self.backend == "command":
            return CommandBackend(Settings.load(lake=self.lake))
        from airflow.sdk import BaseHook

        return openai_from_connection(await BaseHook.aget_connection(self.connection_id))

    async def run(self):
        client = await self._client()
        deadline = datetime.fromisoformat(self.deadline) if self.deadline else None
        errors, job = 0, {}
        while True:
            try:
                job = await client.aretrieve(self.job_id)
                errors = 0
            except Exception as exc:  # noqa: BLE001 - a flaky network must not end a day-long job at once
                errors += 1
                self.log.warning("poll %s of job %s failed (%s/%s): %s", self.backend, self.job_id, errors,
                                 MAX_POLL_ERRORS, exc)
                if errors >= MAX_POLL_ERRORS:
                    yield TriggerEvent({"status": "failed", "job": {"status": "failed", "error": f"polling failed: {exc}"},
                                        "job_key": self.job_key})
                    return
            status = job.get("status")
            if status in ("succeeded", "failed", "cancelled"):
                yield TriggerEvent({"status": status, "job": job, "job_key": self.job_key})
                return
            if deadline and datetime.now(UTC) >= deadline:
                yield TriggerEvent({"status": "timed_out", "job": job, "job_key": self.job_key})
                return
            self.log.info("job %s is %s; next poll in %ss", self.job_id, status, self.poll_seconds)
            await asyncio.sleep(self.poll_seconds)

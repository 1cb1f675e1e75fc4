"""What the scheduler's forkserver imports once, so that LocalExecutor task processes do not import it again.

`make airflow` and the suite's LocalExecutor stack set `[scheduler] mp_start_method = forkserver` and
`[scheduler] mp_forkserver_preload = feedback_loop.airflow_preload` (Airflow 3.3). The executor's workers are
forked from that forkserver, and each task process is forked from a worker, so they all start with the
libraries of `airflow_local.TASK_LIBRARIES` in memory, shared copy-on-write (the Celery worker imports this
module before it forks its pool: feedback_loop.airflow_celery). With Airflow's default (`fork` from the
scheduler), every task imported its stage's libraries itself: Great Expectations alone is ~3.7 s of CPU, in
each of a night's seven GX tasks. The list also holds what the scheduler used to hand down to the workers it
forked (the task runner, the UI plugin's FastAPI imports: Airflow loads plugins in every task), ~0.7 s a task
when a forkserver's worker lacks them.
`bench/scheduler_night.py` measures a night both ways; docs/operations.md has the figures.

Libraries only, never this project's logic: a task still imports `feedback_loop.*` itself, so an edit
under include/ is seen by the next task without restarting `make airflow`. A library that is not installed
is left out with a warning in the scheduler's log: the tasks that need it import it themselves."""

from __future__ import annotations

from feedback_loop.airflow_local import preload_task_libraries

preload_task_libraries()  # the list: airflow_local.TASK_LIBRARIES

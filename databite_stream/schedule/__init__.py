"""The pure scheduling core: schedule specs, next-run maths, job policies, the due index.

Owns everything about *when* a job runs, and nothing about *how*: no faust, aiokafka or mode
import (a test asserts it), no clock reads (every function takes ``now_ms``/``after_ms``, epoch
milliseconds UTC), no I/O. Agents decode a message, call these functions, and emit the result.

Modules: :mod:`.spec` (parsing, canonical text), :mod:`.cron` (cron validation and DST-correct
maths), :mod:`.kinds` (custom schedule kinds), :mod:`.next_run` (next run, jitter),
:mod:`.job` (job state and policies), :mod:`.due_index` (per-partition heap),
:mod:`.identity` (job and run ids), :mod:`.errors`.
"""

from __future__ import annotations

from databite_stream.schedule.cron import CronRule
from databite_stream.schedule.due_index import DueIndex
from databite_stream.schedule.errors import (
    IdentityError,
    PolicyError,
    ScheduleError,
    ScheduleKindError,
)
from databite_stream.schedule.identity import RunRef, job_id, parse_job_id, parse_run_id, run_id
from databite_stream.schedule.job import (
    DueRun,
    FirstRun,
    InFlight,
    JobState,
    Misfire,
    Overlap,
    Policy,
    RunReason,
    create_job,
    on_run_finished,
    pause,
    plan_due,
    request_run_now,
    reschedule,
    resume,
    wake_at_ms,
)
from databite_stream.schedule.kinds import (
    ScheduleKind,
    register_schedule_kind,
    registered_schedule_kinds,
    unregister_schedule_kind,
)
from databite_stream.schedule.next_run import jitter_offset_ms, next_run_after
from databite_stream.schedule.spec import (
    CustomRule,
    IntervalRule,
    ScheduleSpec,
    parse_schedule,
)

__all__ = (
    "CronRule",
    "CustomRule",
    "DueIndex",
    "DueRun",
    "FirstRun",
    "IdentityError",
    "InFlight",
    "IntervalRule",
    "JobState",
    "Misfire",
    "Overlap",
    "Policy",
    "PolicyError",
    "RunReason",
    "RunRef",
    "ScheduleError",
    "ScheduleKind",
    "ScheduleKindError",
    "ScheduleSpec",
    "create_job",
    "jitter_offset_ms",
    "job_id",
    "next_run_after",
    "on_run_finished",
    "parse_job_id",
    "parse_run_id",
    "parse_schedule",
    "pause",
    "plan_due",
    "register_schedule_kind",
    "registered_schedule_kinds",
    "request_run_now",
    "reschedule",
    "resume",
    "run_id",
    "unregister_schedule_kind",
    "wake_at_ms",
)

"""Job and run identities: unambiguous, reversible string ids.

Owns the two id formats that travel on every topic:

* ``job_id(connection_id, sync_name)`` = ``<escaped connection>/<escaped sync>``, where each part
  has ``%`` written as ``%25`` and ``/`` written as ``%2F``. Any two different pairs give different
  ids (the reference engine's ``f"{connection}-{sync}"`` maps ``("a-b", "c")`` and
  ``("a", "b-c")`` to the same id). ``parse_job_id`` is the exact inverse and rejects every string
  ``job_id`` cannot produce, so the mapping is a bijection on valid ids.
* ``run_id(job_id, scheduled_for_ms)`` = ``<job_id>@<scheduled_for_ms>`` (decimal, no sign).
  The job id may itself contain ``@``; the run id is split at the *last* ``@``, after which only
  digits can follow, so it is unambiguous too.

Invariants: pure functions of their arguments; no escaping other than the two above (ids stay
readable, e.g. ``conn-1/Fetch Messages``).
"""

from __future__ import annotations

from typing import Final, NamedTuple

from databite_stream.schedule.errors import IdentityError

__all__ = (
    "JOB_ID_SEPARATOR",
    "RunRef",
    "job_id",
    "parse_job_id",
    "parse_run_id",
    "run_id",
)

JOB_ID_SEPARATOR: Final = "/"
_ESCAPES: Final = {"%25": "%", "%2F": "/"}


def _escape(part: str) -> str:
    return part.replace("%", "%25").replace("/", "%2F")


def _unescape(part: str, whole: str) -> str:
    if "%" not in part:
        return part  # the usual id: nothing escaped (a job row is decoded per run)
    out: list[str] = []
    i = 0
    while True:
        j = part.find("%", i)
        if j < 0:
            out.append(part[i:])
            return "".join(out)
        code = part[j : j + 3]
        if code not in _ESCAPES:
            raise IdentityError(
                f"{whole!r} is not a job id: bad escape {code!r} (only %25 and %2F are produced)"
            )
        out.append(part[i:j])
        out.append(_ESCAPES[code])
        i = j + 3


def job_id(connection_id: str, sync_name: str) -> str:
    """The id of the job that runs ``sync_name`` for ``connection_id`` (injective)."""
    return f"{_escape(connection_id)}{JOB_ID_SEPARATOR}{_escape(sync_name)}"


def parse_job_id(value: str) -> tuple[str, str]:
    """Inverse of :func:`job_id`: ``(connection_id, sync_name)``; raises :class:`IdentityError`."""
    parts = value.split(JOB_ID_SEPARATOR)
    if len(parts) != 2:
        raise IdentityError(
            f"{value!r} is not a job id: expected exactly one unescaped {JOB_ID_SEPARATOR!r}, "
            f"found {len(parts) - 1}"
        )
    return _unescape(parts[0], value), _unescape(parts[1], value)


class RunRef(NamedTuple):
    """A parsed run id."""

    job_id: str
    """The job the run belongs to."""
    scheduled_for_ms: int
    """The instant (epoch ms, UTC) the run was scheduled for."""


def run_id(job_id: str, scheduled_for_ms: int) -> str:
    """The id of ``job_id``'s run scheduled for ``scheduled_for_ms`` (epoch ms, ≥ 0)."""
    if scheduled_for_ms < 0:
        raise IdentityError(f"scheduled_for_ms must be >= 0, got {scheduled_for_ms}")
    return f"{job_id}@{scheduled_for_ms}"


def parse_run_id(value: str) -> RunRef:
    """Inverse of :func:`run_id`; raises :class:`IdentityError` for a malformed id."""
    head, sep, tail = value.rpartition("@")
    if not sep or not tail.isascii() or not tail.isdigit() or (len(tail) > 1 and tail[0] == "0"):
        raise IdentityError(
            f"{value!r} is not a run id: expected '<job_id>@<scheduled_for_ms>' with a decimal "
            "millisecond timestamp after the last '@'"
        )
    parse_job_id(head)
    return RunRef(head, int(tail))

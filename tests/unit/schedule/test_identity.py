"""Job and run ids are unambiguous and round-trip."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from databite_stream.schedule import (
    IdentityError,
    RunRef,
    job_id,
    parse_job_id,
    parse_run_id,
    run_id,
)

names = st.text(max_size=12)


@pytest.mark.parametrize(
    ("connection", "sync", "expected"),
    [
        ("conn-1", "Fetch Messages", "conn-1/Fetch Messages"),
        ("a/b", "c", "a%2Fb/c"),
        ("a", "b/c", "a/b%2Fc"),
        ("100%", "x", "100%25/x"),
        ("%2F", "", "%252F/"),
    ],
)
def test_job_id_table(connection: str, sync: str, expected: str) -> None:
    assert job_id(connection, sync) == expected
    assert parse_job_id(expected) == (connection, sync)


def test_reference_collision_is_gone() -> None:
    assert job_id("a-b", "c") != job_id("a", "b-c")


@settings(max_examples=300)
@given(names, names)
def test_job_id_round_trips(connection: str, sync: str) -> None:
    assert parse_job_id(job_id(connection, sync)) == (connection, sync)


@settings(max_examples=300)
@given(names, names, names, names)
def test_job_id_is_injective(c1: str, s1: str, c2: str, s2: str) -> None:
    assert (job_id(c1, s1) == job_id(c2, s2)) == ((c1, s1) == (c2, s2))


@settings(max_examples=200)
@given(names, names, st.integers(min_value=0, max_value=2**53))
def test_run_id_round_trips(connection: str, sync: str, when: int) -> None:
    job = job_id(connection, sync)
    assert parse_run_id(run_id(job, when)) == RunRef(job, when)


@pytest.mark.parametrize("bad", ["no-separator", "a/b/c", "a%2/b", "a%zz/b", "a%2f/b"])
def test_parse_job_id_rejects(bad: str) -> None:
    with pytest.raises(IdentityError, match="not a job id"):
        parse_job_id(bad)


@pytest.mark.parametrize("bad", ["a/b", "a/b@", "a/b@-1", "a/b@01", "a/b@1x", "ab@5"])
def test_parse_run_id_rejects(bad: str) -> None:
    with pytest.raises(IdentityError):
        parse_run_id(bad)


def test_run_id_with_at_in_job_id() -> None:
    job = job_id("user@example.com", "sync@2")
    assert parse_run_id(run_id(job, 17)) == RunRef(job, 17)

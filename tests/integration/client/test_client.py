"""DatabiteClient against a real worker: catalog round trip, validation, run-now and actions."""

from __future__ import annotations

import asyncio

import pytest

from databite_stream.client import (
    ConnectionExists,
    DatabiteClient,
    ExecutionTimeout,
    IntegrationExists,
    IntegrationInUse,
    InvalidConnection,
    InvalidIntegration,
    ScheduledJob,
    SyncNotActive,
    UnknownAction,
    UnknownConnection,
    UnknownConnector,
    UnknownIntegration,
    UnknownJob,
    UnknownSync,
)
from databite_stream.models import Integration
from databite_stream.schedule import job_id
from databite_stream.topics import COMMANDS, CONNECTIONS, INTEGRATIONS
from tests.helpers import wait_for
from tests.integration.client.conftest import connection, end_offset, integration
from tests.integration.stream.harness import Cluster

pytestmark = pytest.mark.broker


async def _jobs(client: DatabiteClient, cid: str) -> list[ScheduledJob]:
    return await client.get_jobs_for_connection(cid)


async def _wait_jobs(client: DatabiteClient, cid: str, what: str, check: object) -> None:
    async def holds() -> bool:
        jobs = await _jobs(client, cid)
        return bool(check(jobs))  # type: ignore[operator]

    await wait_for(holds, timeout=20, interval=0.1, what=what)


async def test_round_trip_of_the_reference_verbs(client: DatabiteClient, ids: str) -> None:
    iid, cid = f"{ids}-int", f"{ids}-conn"
    job = job_id(cid, "records")

    await client.add_integration(integration(iid))
    assert client.get_integration(iid) == integration(iid)  # read-your-writes, no wait
    await client.add_connection(connection(cid, iid))
    assert client.get_connection(cid) == connection(cid, iid)
    assert client.get_connection("missing") is None
    assert client.get_integration("missing") is None
    assert client.get_connector("echo") is not None
    assert client.get_connector("missing") is None
    with pytest.raises(ConnectionExists):
        await client.add_connection(connection(cid, iid))
    with pytest.raises(IntegrationExists):
        await client.add_integration(integration(iid))

    await _wait_jobs(client, cid, "the job", lambda js: [j.job_id for j in js] == [job])
    assert (await _jobs(client, cid))[0].schedule == "1h"

    # update: the workers reschedule the job
    await client.update_connection(connection(cid, iid, sync_interval="2h"))
    assert client.get_connection(cid) == connection(cid, iid, sync_interval="2h")
    await _wait_jobs(client, cid, "the new schedule", lambda js: js and js[0].schedule == "2h")

    # deactivate / activate a sync: its job disappears / reappears
    updated = await client.deactivate_sync(cid, "records")
    assert updated.active_syncs == ()
    assert client.get_connection(cid) == updated
    await _wait_jobs(client, cid, "no job after deactivate", lambda js: js == [])
    with pytest.raises(SyncNotActive):
        await client.pause_job(job)
    await client.activate_sync(cid, "records")
    assert client.get_connection(cid).active_syncs is None  # type: ignore[union-attr]
    await _wait_jobs(client, cid, "the job after activate", lambda js: len(js) == 1)

    # pause / resume change the job state
    await client.pause_job(job)
    await _wait_jobs(client, cid, "paused", lambda js: js[0].paused and not js[0].is_active)
    await client.resume_job(job)
    await _wait_jobs(client, cid, "resumed", lambda js: not js[0].paused)

    # unschedule removes the jobs, schedule brings them back
    await client.unschedule_connection_syncs(cid)
    await _wait_jobs(client, cid, "unscheduled", lambda js: js == [])
    assert client.get_connection(cid) is not None
    await client.schedule_connection_syncs(cid)
    await _wait_jobs(client, cid, "rescheduled", lambda js: len(js) == 1)
    assert job in {j.job_id for j in await client.get_jobs()}
    assert (await _jobs(client, cid))[0].model_dump(mode="json")["job_id"] == job  # JSON-able

    # remove: gone from the catalog, its jobs gone
    await client.remove_connection(cid)
    assert client.get_connection(cid) is None
    await _wait_jobs(client, cid, "no jobs after removal", lambda js: js == [])
    await client.remove_integration(iid)
    assert client.get_integration(iid) is None


async def test_invalid_input_raises_typed_errors_and_publishes_nothing(
    client: DatabiteClient, cluster: Cluster, ids: str
) -> None:
    iid, cid = f"{ids}-int", f"{ids}-conn"
    await client.add_integration(integration(iid))
    await client.add_connection(connection(cid, iid))
    topics = [cluster.topic(s) for s in (CONNECTIONS, INTEGRATIONS, COMMANDS)]
    before = [await end_offset(cluster.bootstrap, t) for t in topics]

    with pytest.raises(UnknownConnector, match="'nope'"):
        await client.add_integration(Integration(id="x", name="X", connector_id="nope"))
    with pytest.raises(InvalidIntegration, match=r"config\.region"):
        await client.add_integration(
            Integration(id="x", name="X", connector_id="echo", config={"region": "eu"})
        )
    with pytest.raises(UnknownConnector, match="'nope'"):
        await client.add_connection(connection(f"{ids}-1", iid, connector_id="nope"))
    with pytest.raises(UnknownIntegration, match="'no-such-integration'"):
        await client.add_connection(connection(f"{ids}-2", "no-such-integration"))
    with pytest.raises(InvalidConnection, match=r"config\.api_key: Field required"):
        await client.add_connection(connection(f"{ids}-3", iid, config={"record_count": 1}))
    with pytest.raises(InvalidConnection, match="is for 'echo'"):
        await client.add_connection(connection(f"{ids}-4", iid, connector_id="rest"))
    with pytest.raises(UnknownSync, match="'nope'"):
        await client.add_connection(connection(f"{ids}-5", iid, active_syncs=["nope"]))
    with pytest.raises(InvalidConnection, match="every tuesday"):
        await client.add_connection(
            connection(f"{ids}-6", iid, schedules={"records": "every tuesday"})
        )
    with pytest.raises(InvalidConnection, match="sync_interval"):
        await client.add_connection({"id": f"{ids}-7", "integration_id": iid, "sync_interval": 0})
    with pytest.raises(UnknownConnection, match="'nope'"):
        await client.update_connection(connection("nope", iid))
    with pytest.raises(UnknownConnection):
        await client.remove_connection("nope")
    with pytest.raises(UnknownIntegration):
        await client.remove_integration("nope")
    with pytest.raises(IntegrationInUse, match=f"1 connection.*'{cid}'"):
        await client.remove_integration(iid)
    with pytest.raises(UnknownSync, match="Sync 'nope' not found in connector 'echo'"):
        await client.activate_sync(cid, "nope")
    with pytest.raises(UnknownSync):
        await client.deactivate_sync(cid, "nope")
    with pytest.raises(UnknownJob, match="not a job id"):
        await client.pause_job("no separator")
    with pytest.raises(UnknownSync):
        await client.resume_job(job_id(cid, "nope"))
    with pytest.raises(UnknownConnection, match="Connection 'nope' not found"):
        await client.pause_job(job_id("nope", "records"))
    with pytest.raises(UnknownConnection):
        await client.unschedule_connection_syncs("nope")
    with pytest.raises(UnknownConnection):
        await client.schedule_connection_syncs("nope")
    with pytest.raises(UnknownConnection, match="Connection 'nope' not found"):
        await client.execute_sync("nope", "records")
    with pytest.raises(UnknownSync, match="Sync 'nope' not found in connector 'echo'"):
        await client.execute_sync(cid, "nope")
    with pytest.raises(UnknownAction, match="'nope'"):
        await client.execute_action(cid, "nope", {})

    after = [await end_offset(cluster.bootstrap, t) for t in topics]
    assert after == before, "an invalid request was published"
    assert client.get_integration(iid) is not None
    await client.remove_connection(cid)
    await client.remove_integration(iid)


async def test_concurrent_execute_sync_and_actions_get_their_own_results(
    client: DatabiteClient, ids: str
) -> None:
    iid = f"{ids}-int"
    cids = [f"{ids}-c{i}" for i in range(5)]
    await client.add_integration(integration(iid))
    for n, cid in enumerate(cids):
        await client.add_connection(connection(cid, iid, records=n + 1))

    results = await asyncio.gather(*(client.execute_sync(c, "records", timeout=60) for c in cids))
    for n, (cid, result) in enumerate(zip(cids, results, strict=True)):
        assert result.connection_id == cid
        assert result.run_id.startswith(job_id(cid, "records") + "@")
        assert result.success, result.error
        assert result.summary is not None
        assert result.summary.records == n + 1
    assert len({r.run_id for r in results}) == 5

    texts = [f"hello {i}" * (i + 1) for i in range(5)]
    actions = await asyncio.gather(
        *(client.execute_action(c, "echo", {"text": t}) for c, t in zip(cids, texts, strict=True))
    )
    for cid, text, action in zip(cids, texts, actions, strict=True):
        assert action.connection_id == cid
        assert action.success, action.error
        assert action.output == {"text": text, "length": len(text)}

    bad = await client.execute_action(cids[0], "echo", {"txt": "typo"})
    assert not bad.success
    assert bad.error is not None
    assert "input.text" in bad.error
    for cid in cids:
        await client.remove_connection(cid)
    await client.remove_integration(iid)


async def test_execute_sync_of_a_paused_or_unscheduled_job(
    client: DatabiteClient, ids: str
) -> None:
    iid, cid = f"{ids}-int", f"{ids}-conn"
    await client.add_integration(integration(iid))
    await client.add_connection(connection(cid, iid, records=2))
    await _wait_jobs(client, cid, "the job", lambda js: len(js) == 1)
    await client.pause_job(job_id(cid, "records"))
    await _wait_jobs(client, cid, "paused", lambda js: js[0].paused)
    result = await client.execute_sync(cid, "records", timeout=30)  # run-now ignores pause
    assert result.success
    await client.deactivate_sync(cid, "records")
    with pytest.raises(SyncNotActive, match="activate_sync"):
        await client.execute_sync(cid, "records")
    await client.remove_connection(cid)
    await client.remove_integration(iid)


async def test_a_run_now_skipped_by_the_overlap_policy_times_out_with_the_reason(
    client: DatabiteClient, ids: str
) -> None:
    iid, cid = f"{ids}-int", f"{ids}-conn"
    await client.add_integration(integration(iid))
    await client.add_connection(connection(cid, iid, records=2))
    await _wait_jobs(client, cid, "the job", lambda js: len(js) == 1)
    # two run-nows of one job at once: the scheduler admits the first and, with the first
    # still in flight, skips the second (overlap=skip, the reference's "no overlap" made real)
    outcomes = await asyncio.gather(
        client.execute_sync(cid, "records", timeout=3),
        client.execute_sync(cid, "records", timeout=3),
        return_exceptions=True,
    )
    successes = [o for o in outcomes if not isinstance(o, BaseException)]
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(successes) == 1, outcomes
    assert isinstance(failures[0], ExecutionTimeout)
    assert "skipped by the overlap policy" in str(failures[0])
    await client.remove_connection(cid)
    await client.remove_integration(iid)

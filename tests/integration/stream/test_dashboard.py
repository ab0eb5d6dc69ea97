"""The jobs dashboard in a real headless Chromium (Debian's package): see a job, pause it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from databite_stream.devkafka import _free_ports
from databite_stream.models import Connection, Integration
from tests.helpers import wait_for
from tests.integration.stream.harness import REPO, Cluster

pytestmark = pytest.mark.broker

ARTIFACTS = REPO / "artifacts"
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def cluster(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(kafka_bootstrap, tmp_path, extra_env={"DATABITE_API_TOKEN": "ui-token"})
    yield c
    c.stop_all()


async def test_dashboard_lists_a_job_and_pauses_it(cluster: Cluster) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed (make test installs it)"
    await cluster.create_topics()
    (port,) = _free_ports(1)
    cluster.start_worker("w1", DATABITE_WEB_ENABLED="true", DATABITE_WEB_PORT=str(port))
    await cluster.put_integration(Integration(id="int-1", name="E", connector_id="echo", config={}))
    await cluster.put_connection(
        Connection(
            id="demo-ui",
            integration_id="int-1",
            connector_id="echo",
            config={"api_key": "k-ui-0001"},
            schedules={"records": "2s"},
        )
    )
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 600})

            async def loaded() -> bool:
                try:
                    await page.goto(f"http://127.0.0.1:{port}/?token=ui-token", timeout=5000)
                except Exception:
                    return False
                return True

            await wait_for(loaded, timeout=90, interval=1.0, what="the dashboard to load")
            row = page.locator('tr[data-job-id="demo-ui/records"]')
            await row.wait_for(timeout=60_000)
            await page.screenshot(path=str(ARTIFACTS / "dashboard-before.png"))
            await row.locator('button[data-action="pause"]').click()
            await page.locator('tr[data-job-id="demo-ui/records"] td.state-paused').wait_for(
                timeout=30_000
            )
            assert await row.locator("td.state").inner_text() == "paused"
            assert await row.locator('button[data-action="resume"]').count() == 1
            await page.screenshot(path=str(ARTIFACTS / "dashboard.png"))
        finally:
            await browser.close()
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 1000

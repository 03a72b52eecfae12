"""The dashboard in a real headless Chromium, against `outpost fleet serve` seeded over HTTP.

The world: the example fleet, signed, plus one change C (retail-eu's peak-season
freeze lifted) committed six days ago. `outpost schedule` predicts C for
retail-eu's four stores; two of them run it, one refused it, one waits behind
its own site freeze. Of the other eight sites, six run C, one is failing and
one has been silent for five days. Every report is signed with the site's node
key and POSTed to the collector, which verifies it as it would a node's.

The browser is Debian's ``chromium`` driven by Playwright's Python package
(no downloaded browser). Every request the pages make is logged and any to
another host is aborted and fails the test; console errors fail it too. A
screenshot of each page is saved in the test's folder.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import urllib3
from collector_world import FLEET_TIME, REPO_ROOT, Keys, Server, signed, start_server

from tools import signedfleet

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # tests run as root in CI's container, where the sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REFUSAL = "policy 'pos-limits' refused Deployment pos/pos: memory limit 4Gi is above 2Gi"
DEGRADED = "Deployment pos/pos: 1 of 2 replicas available (ImagePullBackOff)"
WARNING = "pos: image ghcr.io/acme/pos:4.3.0 is not pinned by digest"
FROZEN = "frozen by 'peak-season' until 2027-01-05 (holiday trading: Black Friday to Epiphany)"


def lift_freeze(text: str) -> str:
    kept = [line for line in text.splitlines(keepends=True) if "peak-season" not in line]
    kept = [line for line in kept if line.strip() != "freezes:"]
    return "".join(kept).replace("Stores in Germany", "Stores in Germany, no peak freeze")


@dataclass
class World:
    server: Server
    token: str
    base: str
    change: str
    predicted: dict[str, datetime | None]
    now: datetime  # when the world was seeded: the server's own clock reads ages against it


def post(server: Server, body: bytes) -> None:
    answer = urllib3.request(
        "POST",
        server.url + "/api/v1/reports",
        body=body,
        headers={"Content-Type": "application/json"},
        retries=False,
        timeout=10,
    )
    assert answer.status == 200, answer.data
    assert json.loads(answer.data)["outcome"] == "stored"


def report(keys: Keys, site: str, at: datetime, **kw: Any) -> bytes:
    return signed(keys, site, at, **kw).to_bytes()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("dashboard")
    # Taken here, not at import: pytest collects every module first, and the server measures
    # ages with its real clock, so a module-level time would drift by the whole run before this.
    now = datetime.now(UTC).replace(microsecond=0)
    change_at = now - timedelta(days=6)
    fleet = signedfleet.create(tmp / "repo", when=FLEET_TIME)
    base = fleet.head()
    fleet.edit("fleets/retail-eu.yaml", lift_freeze)
    fleet.commit("retail-eu: no peak-season freeze", when=change_at)
    change = fleet.head()

    from reconciler.fleet.dashboard.prediction import predict_change

    prediction = predict_change(fleet.path, fleet.allowed_signers, change, now=now)
    assert prediction.problem is None
    # What `outpost schedule` says for C, which the seeded reports follow.
    assert set(prediction.sites) == {"de-muc-0007", "de-fra-0088", "de-ham-0113", "de-ber-0042"}
    muc, fra, ham = (prediction.sites[s] for s in ("de-muc-0007", "de-fra-0088", "de-ham-0113"))
    assert muc and fra and ham and max(muc, fra, ham) < now - timedelta(hours=2)
    assert prediction.sites["de-ber-0042"] is None or prediction.sites["de-ber-0042"] > now

    db = tmp / "collector.db"
    token = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "fleet", "token", "add", "ops", "--db", str(db)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REPO_ROOT)},
    ).stdout.strip()
    server = start_server(
        tmp,
        ["--db", str(db)],
        fleet,
        "--commit-url",
        "https://git.example.com/ops/fleet/commit/{commit}",
    )
    recent = now - timedelta(minutes=10)
    applied_c = {"revision": change, "at": None}
    try:
        # retail-eu: two applied C when their schedule allowed, one refused it, one waits.
        for site, at in (("de-muc-0007", muc), ("de-ham-0113", ham)):
            took = at + timedelta(minutes=4)
            post(server, report(keys, site, took, revision=change))
            post(
                server,
                report(
                    keys,
                    site,
                    recent,
                    outcome="unchanged",
                    applied={**applied_c, "at": took.isoformat()},
                ),
            )
        post(server, report(keys, "de-fra-0088", now - timedelta(days=7), revision=base))
        for at, drift in ((fra + timedelta(minutes=3), 0), (recent, 2)):
            post(
                server,
                report(
                    keys,
                    "de-fra-0088",
                    at,
                    outcome="refused",
                    applied={"revision": base, "at": (now - timedelta(days=7)).isoformat()},
                    pending={"revision": change, "reason": REFUSAL, "until": None},
                    drift={"objects": drift, "corrected": drift},
                    warnings=[WARNING],
                    started=(at - timedelta(seconds=4.2)).isoformat(),
                ),
            )
        post(
            server,
            report(
                keys,
                "de-ber-0042",
                recent,
                outcome="waiting",
                applied={"revision": base, "at": FLEET_TIME.isoformat()},
                pending={
                    "revision": change,
                    "reason": FROZEN,
                    "until": "2027-01-05T23:00:00+00:00",
                },
            ),
        )
        # Sites C does not change: they run it; one is failing, one silent for five days.
        for site in ("au-syd-0501", "in-blr-0601", "us-aus-0244", "us-nyc-0310"):
            post(server, report(keys, site, recent, revision=change))
        for site in ("plant-lyon", "plant-ostrava"):
            post(server, report(keys, site, recent, node="ipc-1", revision=change))
        post(
            server,
            report(
                keys, "us-chi-0201", recent, revision=change, health="degraded", lastError=DEGRADED
            ),
        )
        post(server, report(keys, "jp-tyo-0701", now - timedelta(days=5), revision=base))
        yield World(server, token, base, change, dict(prediction.sites), now)
    finally:
        server.stop()


class Browser:
    """One Chromium page that logs every request and console error."""

    def __init__(self, page: Any, origin: str) -> None:
        self.page = page
        self.origin = origin
        self.requests: list[str] = []
        self.foreign: list[str] = []
        self.errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))

        def route(route: Any) -> None:
            url = route.request.url
            self.requests.append(url)
            if urlsplit(url).netloc != urlsplit(origin).netloc:
                self.foreign.append(url)
                route.abort()
            else:
                route.continue_()

        page.route("**/*", route)

    def text(self, selector: str) -> str:
        return str(self.page.locator(selector).text_content()).strip()

    def counts(self, scope: str) -> dict[str, int]:
        found = {}
        for item in self.page.locator(f"{scope} .counts li[data-state]").all():
            number, _, state = item.inner_text().strip().partition(" ")
            found[state.strip()] = int(number)
        return found


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_overview_change_site_in_chromium(world: World, chromium: Any, tmp_path: Path) -> None:
    context = chromium.new_context(viewport={"width": 1600, "height": 1000})
    b = Browser(context.new_page(), world.server.url)
    page = b.page

    # Not signed in: the login form; a wrong token is refused, the right one lets us in.
    page.goto(world.server.url + "/dashboard/")
    assert "/dashboard/login" in page.url
    page.fill("#token", "not-a-token")
    page.click("button[type=submit]")
    assert "not known here" in b.text("p.error")
    assert b.errors == [  # the refused login's status, which Chromium logs as an error
        "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
    ]
    b.errors.clear()
    page.fill("#token", world.token)
    page.click("button[type=submit]")
    page.wait_for_url(world.server.url + "/dashboard/")
    cookie = next(c for c in context.cookies() if c["name"] == "outpost_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert world.token not in cookie["value"]

    # Overview: totals and rows as seeded.
    assert b.text("#site-total") == "12"
    assert b.counts(".summary") == {
        "applied": 8,
        "waiting": 1,
        "failing": 1,
        "refused": 1,
        "silent": 1,
    }
    canary = "tr.wave-row[data-fleet='retail-eu'][data-wave='canary']"
    assert b.counts(canary) == {"applied": 1}
    assert page.locator(f"{canary} a.cell").count() == 1
    eu_rows = page.locator("tr.wave-row[data-fleet='retail-eu']")
    assert sum(int(r.locator("td.num").inner_text()) for r in eu_rows.all()) == 4
    assert page.locator("a.cell.s-refused[title^='de-fra-0088']").count() == 1
    alerts = sorted(a.inner_text() for a in page.locator("li.alert a").all())
    assert alerts == sorted(
        [
            f"[FIRING] outpost refused at de-fra-0088: de-fra-0088 refused "
            f"{world.change[:12]}: {REFUSAL}",
            f"[FIRING] outpost failing at us-chi-0201: us-chi-0201 health degraded: {DEGRADED}",
            f"[FIRING] outpost silent at jp-tyo-0701: jp-tyo-0701 last reported at "
            f"{(world.now - timedelta(days=5)).isoformat()}",
        ]
    )
    page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)

    # Filters: by region label, then by state; search by site id.
    page.select_option("select[name=label]", "region=eu-central")  # the German stores, Ostrava
    page.click(".filters button")
    assert b.text("#site-total") == "5"
    assert b.counts(".summary") == {"applied": 3, "waiting": 1, "refused": 1}
    page.select_option("select[name=state]", "refused")
    page.click(".filters button")
    assert [r.get_attribute("data-site") for r in page.locator("table.sites tbody tr").all()] == [
        "de-fra-0088"
    ]
    page.goto(world.server.url + "/dashboard/?q=plant")
    assert b.text("#site-total") == "2"

    # Overview → change: the repository head is C.
    page.goto(world.server.url + "/dashboard/")
    page.click(f"a[href='/dashboard/changes/{world.change}']")
    page.wait_for_url(re.compile(r".*/dashboard/changes/[0-9a-f]{40}$"))
    assert b.text("#applied-count") == "9"
    assert b.text("#site-count") == "12"
    assert b.text("#scheduled-count") == "4"
    assert b.text("#chart-actual") == "2 applied"
    by_now = sum(1 for t in world.predicted.values() if t is not None and t <= world.now)
    assert by_now == 3
    assert b.text("#chart-predicted") == f"{by_now} by now"
    assert page.locator("svg.chart polyline.actual").count() == 1
    assert page.locator("svg.chart polyline.predicted").count() == 1
    assert page.locator("a.commit-link").get_attribute("href") == (
        f"https://git.example.com/ops/fleet/commit/{world.change}"
    )
    canary = "tr.wave-row[data-fleet='retail-eu'][data-wave='canary']"
    assert b.text(f"{canary} td.applied") == "1" and b.text(f"{canary} td.predicted") == "1"
    assert b.text("#late-count") == "1"
    late = page.locator("table.late tbody tr")
    assert late.count() == 1 and late.get_attribute("data-site") == "de-fra-0088"
    assert b.text("table.late td.why") == REFUSAL
    page.locator("section[aria-label='sites done over time']").screenshot(
        path=str(tmp_path / "change-chart.png")
    )
    page.screenshot(path=str(tmp_path / "change.png"), full_page=True)

    # Change → site: the late, refused store.
    page.click("table.late a[href='/dashboard/sites/de-fra-0088']")
    page.wait_for_url(world.server.url + "/dashboard/sites/de-fra-0088")
    assert b.text("#report-age") == "10m"
    assert b.text("#pending").startswith(f"{world.change[:12]}: {REFUSAL}")
    assert b.text("#runs").startswith(world.base[:12])
    ticks = page.locator("tr.tick")
    assert ticks.count() == 3
    newest = ticks.nth(0).locator("td")
    assert newest.nth(1).inner_text() == "refused"
    assert newest.nth(2).inner_text() == "4.2s"
    assert newest.nth(3).inner_text() == "2 / 2"
    assert newest.nth(5).inner_text() == WARNING
    assert ticks.nth(2).locator("td").nth(1).inner_text() == "applied"
    node = page.locator("tr[data-node='edge-1'] td")
    assert node.nth(1).inner_text() == "arm64 · 8 CPU · 16Gi · serial CZCD4795D8"
    assert node.nth(2).inner_text() == "10m ago"
    assert page.locator("li.alert").count() == 1
    page.screenshot(path=str(tmp_path / "site.png"), full_page=True)

    assert b.foreign == []
    assert b.errors == []
    assert all(u.startswith(world.server.url + "/dashboard/") for u in b.requests)
    context.close()


@pytest.mark.parametrize(("screen", "size"), [("laptop", (1366, 768)), ("wall", (3840, 2160))])
def test_overview_fits_a_laptop_and_a_wall_screen(
    world: World, chromium: Any, tmp_path: Path, screen: str, size: tuple[int, int]
) -> None:
    """No horizontal scrolling on a laptop; on a wall screen the text grows with the screen."""
    context = chromium.new_context(
        viewport={"width": size[0], "height": size[1]},
        extra_http_headers={"Authorization": f"Bearer {world.token}"},
    )
    page = context.new_page()
    page.goto(world.server.url + "/dashboard/")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= size[0]
    font = float(page.evaluate("parseFloat(getComputedStyle(document.documentElement).fontSize)"))
    assert font >= (14 if screen == "laptop" else 24)
    page.screenshot(path=str(tmp_path / f"overview-{screen}.png"))
    context.close()


def test_bearer_token_and_refusals_in_chromium(world: World, chromium: Any) -> None:
    """The API's bearer token opens the pages too; a cookie from elsewhere or a foreign login
    form does not."""
    context = chromium.new_context(extra_http_headers={"Authorization": f"Bearer {world.token}"})
    page = context.new_page()
    answer = page.goto(world.server.url + "/dashboard/sites/jp-tyo-0701")
    assert answer.status == 200
    assert page.locator("h1 .state").inner_text() == "silent"
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    assert page.goto(world.server.url + "/dashboard/sites/no-such-site").status == 404
    context.close()

    bare = chromium.new_context()
    bare.add_cookies(
        [
            {
                "name": "outpost_session",
                "value": "b3BzfDk5OTk5OTk5OTk5.forged",
                "url": world.server.url,
            }
        ]
    )
    page = bare.new_page()
    page.goto(world.server.url + "/dashboard/changes/" + world.change)
    assert "/dashboard/login" in page.url
    bare.close()
    refused = urllib3.request(
        "POST",
        world.server.url + "/dashboard/login",
        body=f"token={world.token}&next=/dashboard/",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": "https://evil.example",
        },
        redirect=False,
        retries=False,
    )
    assert refused.status == 403
    assert "set-cookie" not in refused.headers

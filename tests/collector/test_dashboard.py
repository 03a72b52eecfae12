"""The dashboard's parts without a browser: session cookies, filters, the chart, late sites."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from reconciler.fleet.collector.fleetview import FleetView, SiteInfo
from reconciler.fleet.collector.store import SiteRecord
from reconciler.fleet.dashboard.chart import rollout_chart
from reconciler.fleet.dashboard.session import SESSION_SECONDS, SessionSigner
from reconciler.fleet.dashboard.views import (
    PAGE_SIZE,
    Filters,
    Predicted,
    age_text,
    change_page,
    overview,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
A, C = "a" * 40, "c" * 40


def test_session_cookie_names_its_token_until_it_expires() -> None:
    signer = SessionSigner(b"k" * 32)
    cookie = signer.issue("ops", now=1000.0)
    assert signer.name(cookie, now=1000.0 + SESSION_SECONDS - 1) == "ops"
    assert signer.name(cookie, now=1000.0 + SESSION_SECONDS + 1) is None
    assert SessionSigner(b"x" * 32).name(cookie, now=1000.0) is None
    body, mac = cookie.split(".")
    forged = SessionSigner(b"x" * 32).issue("admin", now=1000.0).split(".")[0]
    assert signer.name(f"{forged}.{mac}", now=1000.0) is None
    assert signer.name(f"{body}.{mac[:-1]}A", now=1000.0) in (None, "ops")  # one bit of base64


@given(st.text(max_size=600))
def test_any_cookie_text_is_refused_without_raising(text: str) -> None:
    assert SessionSigner(b"k" * 32).name(text, now=0.0) is None


@given(
    st.dictionaries(
        st.sampled_from(["fleet", "label", "state", "revision", "q", "page"]), st.text(max_size=100)
    )
)
def test_any_query_gives_filters(query: dict[str, str]) -> None:
    filters = Filters.parse(query)
    assert filters.page >= 1
    assert filters.state in (
        None,
        "applied",
        "waiting",
        "failing",
        "refused",
        "rolled-back",
        "stale",
        "silent",
    )
    assert filters.label is None or "=" in filters.label
    assert Filters.parse(dict(p.split("=", 1) for p in filters.query().split("&") if p)) is not None


def record(
    site: str,
    applied: str,
    *,
    outcome: str = "unchanged",
    pending: str | None = None,
    reason: str | None = None,
    age: timedelta = timedelta(minutes=5),
    applied_at: datetime | None = None,
) -> SiteRecord:
    return SiteRecord(
        site,
        "edge-1",
        NOW - age,
        NOW - age,
        "x",
        outcome,
        "healthy",
        applied,
        (applied_at or NOW - age).isoformat(),
        pending,
        reason,
        None,
        None,
        (),
        (NOW - age).isoformat(),
        (),
    )


def info(site: str, wave: str, country: str) -> SiteInfo:
    return SiteInfo(
        site,
        "online",
        ("retail",),
        {"retail": wave},
        {"retail": 0},
        {},
        labels={"country": country},
    )


def test_overview_pages_and_aggregates_many_sites() -> None:
    names = [f"s-{i:05d}" for i in range(1200)]
    view = FleetView(
        "f" * 40,
        {
            n: info(n, "canary" if i < 10 else "all", "de" if i % 2 else "fr")
            for i, n in enumerate(names)
        },
        {"retail": ("canary", "all")},
    )
    records = {n: record(n, A) for n in names[:1100]}
    found = overview(records, view, NOW, Filters(page=3))
    assert found.total == 1200 and found.totals["applied"] == 1100
    assert found.totals["silent"] == 100
    canary, rest = found.rows
    assert (canary.wave, canary.total, len(canary.cells)) == ("canary", 10, 10)
    assert (rest.total, rest.cells) == (1190, ())  # too many: a bar instead of cells
    assert [b[:2] for b in rest.bar] == [("applied", 1090), ("silent", 100)]
    assert [s.site for s in found.sites] == names[2 * PAGE_SIZE : 3 * PAGE_SIZE]
    assert found.pages == 24
    german = overview(records, view, NOW, Filters(label="country=de", search="s-011"))
    assert [s.site for s in german.sites] == [f"s-011{i}{j}" for i in range(10) for j in "13579"]


def test_late_sites_are_those_past_their_predicted_instant_with_the_node_reason() -> None:
    view = FleetView(
        "f" * 40,
        {n: info(n, "all", "de") for n in ("done", "late", "not-yet", "spare")},
        {"retail": ("all",)},
    )
    records = {
        "done": record("done", C, applied_at=NOW - timedelta(hours=20)),
        "late": record("late", A, outcome="waiting", pending=C, reason="outside its window"),
        "not-yet": record("not-yet", A, outcome="waiting", pending=C, reason="soak"),
        "spare": record("spare", C),
    }
    prediction = Predicted(
        NOW - timedelta(days=1),
        {
            "done": NOW - timedelta(hours=22),
            "late": NOW - timedelta(hours=3),
            "not-yet": NOW + timedelta(hours=5),
        },
        {},
    )
    page = change_page(
        C,
        view,
        records,
        now=NOW,
        descends=lambda r, a: r == a or None,
        prediction=prediction,
        commit_url="https://git.example/c/{commit}",
    )
    assert page.commit_url == f"https://git.example/c/{C}"
    assert [(s.site, s.why, s.late_by) for s in page.late] == [
        ("late", "outside its window", "3h00m")
    ]
    assert page.totals["applied"] == 2 and page.scheduled == 3
    assert page.actual == (NOW - timedelta(hours=20),)  # "spare" is not one the change affects
    svg = rollout_chart(
        start=prediction.start,
        now=NOW,
        actual=page.actual,
        predicted=page.predicted,
        total=page.scheduled,
    )
    assert ">1 applied<" in svg and ">2 by now<" in svg and "<script" not in svg


def test_age_text() -> None:
    assert [age_text(s) for s in (None, 5, 120, 3 * 3600 + 300, 2 * 86400 + 4 * 3600)] == [
        "never",
        "5s",
        "2m",
        "3h05m",
        "2d4h",
    ]


def test_serve_options_refuse_a_bad_commit_url_and_a_short_session_key(tmp_path) -> None:
    import pytest

    from reconciler.core.errors import ConfigError
    from reconciler.fleet.dashboard.session import load_key
    from reconciler.fleet.dashboard.web import check_commit_url

    assert check_commit_url("https://git.example/c/{commit}") == "https://git.example/c/{commit}"
    for bad in ("ftp://git.example/{commit}", "https://git.example/c/"):
        with pytest.raises(ConfigError, match="expected an http"):
            check_commit_url(bad)
    short = tmp_path / "key"
    short.write_text("too short\n")
    with pytest.raises(ConfigError, match=r"at least 32 bytes.*found 9"):
        load_key(short)
    with pytest.raises(ConfigError, match="cannot read it"):
        load_key(tmp_path / "missing")
    short.write_text("x" * 48)
    assert load_key(short) == b"x" * 48
    assert load_key(None) != load_key(None)

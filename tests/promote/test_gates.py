"""Gates in the fleet document, Promotion/Halt records, and the wave a gate holds."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from reconciler.core.errors import ValidationError
from reconciler.core.schedule import (
    Apply,
    Change,
    FleetRollout,
    Gate,
    RolloutRecord,
    SiteCalendar,
    Wait,
    decide,
    parse_record,
    predict,
    promotion_state,
    record_path,
    wave_slot,
)
from reconciler.core.schemas import schema_errors

T = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
A, B = "a" * 40, "b" * 40

SPEC = {
    "waves": [
        {"name": "canary", "sites": ["s-1"]},
        {"name": "early", "sites": ["s-2"], "gate": {"healthy": 100, "minSoak": "2h"}},
        {"name": "all", "soak": "3h", "gate": {}},
    ]
}


def _rollout(**kw: object) -> FleetRollout:
    return FleetRollout.from_spec(SPEC, fleet="retail", **kw)  # type: ignore[arg-type]


def _site(name: str) -> SiteCalendar:
    return SiteCalendar(name, ZoneInfo("Europe/Berlin"))


def test_gate_defaults_are_the_retail_ones() -> None:
    rollout = _rollout()
    assert rollout.waves[2].gate == Gate(9000, 0, timedelta(hours=24))
    assert rollout.waves[1].gate == Gate(10000, 0, timedelta(hours=2))
    # the longer of soak and minSoak counts
    assert rollout.offsets == (timedelta(0), timedelta(hours=2), timedelta(hours=26))


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        ({"healthy": 0}, "spec.waves[1].gate.healthy: expected a percentage"),
        ({"maxFailed": -1}, "spec.waves[1].gate.maxFailed: expected a whole number"),
        ({"minSoak": "soon"}, "spec.waves[1].gate.minSoak: expected a duration"),
        ({"healty": 90}, "unknown key 'healty'"),
    ],
)
def test_a_bad_gate_is_refused_by_key(gate: dict[str, object], message: str) -> None:
    spec = {"waves": [{"name": "canary", "sites": ["s-1"]}, {"name": "all", "gate": gate}]}
    with pytest.raises(ValidationError, match=message.replace(".", r"\.").replace("[", r"\[")):
        FleetRollout.from_spec(spec, fleet="retail")


def test_the_first_wave_cannot_be_gated() -> None:
    with pytest.raises(ValidationError, match="first wave"):
        FleetRollout.from_spec({"waves": [{"name": "all", "gate": {}}]}, fleet="retail")


def test_the_schema_knows_gates_and_records() -> None:
    fleet = {
        "apiVersion": "outpost/v1",
        "kind": "Fleet",
        "metadata": {"name": "retail"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "apps": {}, **copy.deepcopy(SPEC)},
    }
    assert schema_errors("Fleet", fleet) == []
    fleet["spec"]["waves"][1]["gate"]["healthy"] = 101  # type: ignore[index]
    assert schema_errors("Fleet", fleet)
    record = RolloutRecord("Halt", "retail", A, (("early", T),), "all", T, "1 failed")
    from reconciler.core.loader import load_document

    body = load_document(record.to_yaml().encode(), record_path("retail", A)).body
    assert schema_errors("Halt", body) == []


def test_a_wave_awaits_promotion_then_opens_at_the_later_of_soak_and_promotion() -> None:
    change = Change(T)
    slot = wave_slot(_site("s-2"), _rollout(), change)
    assert slot.opens is None and slot.blocked_kind == "awaits-promotion"
    assert slot.earliest == T + timedelta(hours=2) and slot.awaits == "early"
    assert "healthy" in (slot.blocked or "")
    late = T + timedelta(hours=5)
    promoted = _rollout().__class__(**{**_rollout().__dict__, "promoted": (("early", late),)})
    assert wave_slot(_site("s-2"), promoted, change).opens == late
    # the last wave awaits its own promotion; its earliest counts from early's opening
    last = wave_slot(_site("s-9"), promoted, change)
    assert last.awaits == "all" and last.earliest == late + timedelta(hours=24)
    assert isinstance(decide(_site("s-2"), promoted, change, late), Apply)
    assert isinstance(decide(_site("s-2"), promoted, change, late - timedelta(minutes=1)), Wait)


def test_a_halt_stops_waves_not_yet_open_and_an_emergency_passes() -> None:
    from dataclasses import replace

    halted = replace(_rollout(), promoted=(("early", T + timedelta(hours=2)),), halted="x")
    assert wave_slot(_site("s-9"), halted, Change(T)).blocked_kind == "halted"
    assert wave_slot(_site("s-2"), halted, Change(T)).opens == T + timedelta(hours=2)
    emergency = Change(T, emergency=True, emergency_reason="POS crash")
    assert wave_slot(_site("s-9"), halted, emergency).opens == T + timedelta(hours=26)


def test_predict_gives_the_earliest_a_gated_wave_could_open() -> None:
    row = predict(_site("s-9"), _rollout(), Change(T), T)
    assert row.first_allowed is None and row.blocked_kind == "awaits-promotion"
    assert row.earliest_open == T + timedelta(hours=26) == row.earliest_allowed


def test_a_later_promotion_that_includes_the_change_counts_a_halt_only_its_own() -> None:
    later = RolloutRecord("Promotion", "retail", B, (("early", T),))
    halt = RolloutRecord("Halt", "retail", B, (), "early", T, "canary rolled back")
    state = promotion_state([later], A, lambda p, c: (p, c) == (B, A))
    assert state.promoted == (("early", T),)
    assert promotion_state([later], A, lambda p, c: False).promoted == ()
    assert promotion_state([halt], A, lambda p, c: True).halted is None
    assert "canary rolled back" in (promotion_state([halt], B, lambda p, c: False).halted or "")


def test_a_record_under_another_change_s_name_is_refused() -> None:
    spec = {"fleet": "retail", "change": A, "opened": [{"wave": "early", "openedAt": T}]}
    assert parse_record("Promotion", spec, path=record_path("retail", A)).change == A
    with pytest.raises(ValidationError, match="belongs in rollouts/retail/a"):
        parse_record("Promotion", spec, path=record_path("retail", B))
    with pytest.raises(ValidationError, match="opens at least one wave"):
        parse_record("Promotion", {**spec, "opened": []}, path=record_path("retail", A))


def test_validate_names_the_file_and_line_of_a_record_a_node_would_refuse(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.promote.promote_world import make_world

    world = make_world(tmp_path, 2, when=int(T.timestamp()))
    good = RolloutRecord("Promotion", "retail", A, (("early", T),)).to_yaml()
    (world.repo.path / "rollouts/retail").mkdir(parents=True)
    (world.repo.path / record_path("retail", A)).write_text(good)
    bad = good.replace("wave: early", "wave: Early")
    (world.repo.path / record_path("retail", B)).write_text(bad)
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "validate", "--repo", str(world.repo.path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert f"rollouts/retail/{B}.yaml:" in out and "belongs in" in out
    assert not any(line.startswith(f"rollouts/retail/{A}.yaml") for line in out.splitlines())

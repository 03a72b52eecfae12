"""The change page's predicted schedule: computed once per commit, ahead of the first view,
in a child process, and the collector says when a refresh verified a new head."""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from collector_world import FLEET_TIME

from reconciler.fleet.collector.app import Collector
from reconciler.fleet.collector.fleetview import FleetSource
from reconciler.fleet.collector.store import open_store
from reconciler.fleet.dashboard import prediction
from reconciler.fleet.dashboard.prediction import (
    Predictions,
    from_json,
    predict_change,
    predict_in_child,
    to_json,
)
from reconciler.fleet.dashboard.views import Predicted
from tools import signedfleet

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Counting:
    """A predictor that counts its calls and can be held until released."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()

    def __call__(self, repository: Path, trust: Path, commit: str, *, now: datetime) -> Predicted:
        self.calls.append(commit)
        self.started.set()
        assert self.release.wait(10)
        if commit.startswith("bad"):
            return Predicted(now, {}, {}, problem=f"{commit} is not in {repository}")
        return Predicted(now, {"s1": now + timedelta(hours=1)}, {}, problem=None)


def test_a_view_during_the_computation_ahead_waits_for_it_and_nothing_runs_twice() -> None:
    predictor = Counting()
    predictor.release.clear()
    kept = Predictions(Path("repo"), Path("trust"), predict=predictor)
    kept.ahead("c" * 40, now=NOW)
    assert predictor.started.wait(10)
    answers: list[Predicted] = []
    viewers = [
        threading.Thread(target=lambda: answers.append(kept.get("c" * 40, now=NOW)))
        for _ in range(3)
    ]
    for viewer in viewers:
        viewer.start()
    time.sleep(0.2)
    assert answers == []  # they wait for the computation under way
    kept.ahead("c" * 40, now=NOW)  # a second refresh seeing the same head starts nothing
    predictor.release.set()
    for viewer in viewers:
        viewer.join(10)
    assert predictor.calls == ["c" * 40]
    assert len(answers) == 3 and all(a.sites == {"s1": NOW + timedelta(hours=1)} for a in answers)
    assert kept.get("c" * 40, now=NOW + timedelta(days=1)) is answers[0]
    assert predictor.calls == ["c" * 40]


def test_a_problem_without_sites_is_not_kept_and_old_commits_are_dropped() -> None:
    predictor = Counting()
    kept = Predictions(Path("repo"), Path("trust"), predict=predictor)
    assert kept.get("bad" + "0" * 37, now=NOW).problem
    assert kept.get("bad" + "0" * 37, now=NOW).problem
    assert predictor.calls == ["bad" + "0" * 37] * 2
    commits = [f"{n:040x}" for n in range(prediction.KEEP + 5)]
    for commit in commits:
        kept.get(commit, now=NOW)
    kept.get(commits[-1], now=NOW)
    kept.get(commits[0], now=NOW)  # dropped: computed again
    assert predictor.calls.count(commits[0]) == 2
    assert predictor.calls.count(commits[-1]) == 1


def test_a_predictor_that_raises_answers_with_a_problem_instead_of_hanging_viewers() -> None:
    def broken(repository: Path, trust: Path, commit: str, *, now: datetime) -> Predicted:
        raise RuntimeError("boom")

    kept = Predictions(Path("repo"), Path("trust"), predict=broken)
    answer = kept.get("c" * 40, now=NOW)
    assert answer.problem is not None and "boom" in answer.problem and not answer.sites


def test_the_child_process_answers_as_outpost_schedule_does(tmp_path: Path) -> None:
    fleet = signedfleet.create(tmp_path / "repo", when=FLEET_TIME)
    fleet.edit(
        "fleets/retail-eu.yaml", lambda text: text.replace("spec:\n", "spec:\n  # reviewed\n", 1)
    )
    fleet.write("sites/de-muc-0007/notes.txt", "a new note\n")
    fleet.commit("de-muc-0007: a note", when=FLEET_TIME + timedelta(days=1))
    change = fleet.head()
    here = predict_change(fleet.path, fleet.allowed_signers, change, now=NOW)
    there = predict_in_child(fleet.path, fleet.allowed_signers, change, now=NOW)
    assert here.problem is None and "de-muc-0007" in here.sites
    assert there == here
    missing = predict_in_child(fleet.path, fleet.allowed_signers, "0" * 40, now=NOW)
    assert missing.problem == f"{'0' * 12} is not in {fleet.path}" and not missing.sites


def test_the_collector_names_each_new_verified_head_once(tmp_path: Path) -> None:
    fleet = signedfleet.create(tmp_path / "repo", when=FLEET_TIME)
    source = FleetSource(fleet.path, fleet.allowed_signers)
    collector = Collector(
        store=open_store(str(tmp_path / "c.db"), now=NOW), source=source, clock=lambda: NOW
    )
    heads: list[str] = []
    collector.on_new_head.append(heads.append)
    collector.on_new_head.insert(0, lambda head: 1 / 0)  # a broken watcher stops nobody
    collector.refresh_every = 3600
    collector.start()
    try:
        first = fleet.head()
        assert heads == [first]
        collector.background_once()
        assert heads == [first]
        fleet.write("sites/de-muc-0007/notes.txt", "a new note\n")
        fleet.commit("de-muc-0007: a note", when=FLEET_TIME + timedelta(days=1))
        collector.background_once()
        assert heads == [first, fleet.head()]
    finally:
        collector.stop()


def test_a_prediction_kept_in_the_store_serves_the_next_collector(
    tmp_path: Path, store_target: str
) -> None:
    trust = tmp_path / "allowed_signers"
    trust.write_text("root@example.com ssh-ed25519 AAAA\n")
    store = open_store(store_target, now=NOW)
    first, second = Counting(), Counting()
    answer = Predictions(Path("repo"), trust, predict=first, store=store).get("c" * 40, now=NOW)
    again = Predictions(Path("repo"), trust, predict=second, store=store).get("c" * 40, now=NOW)
    assert first.calls == ["c" * 40] and second.calls == []
    assert again == answer and again.sites == {"s1": NOW + timedelta(hours=1)}
    # Another trust root is another question; a problem is never kept.
    trust.write_text("root@example.com ssh-ed25519 BBBB\n")
    Predictions(Path("repo"), trust, predict=second, store=store).get("c" * 40, now=NOW)
    Predictions(Path("repo"), trust, predict=second, store=store).get("bad" + "0" * 37, now=NOW)
    Predictions(Path("repo"), trust, predict=second, store=store).get("bad" + "0" * 37, now=NOW)
    assert second.calls == ["c" * 40] + ["bad" + "0" * 37] * 2
    for n in range(5):
        Predictions(Path("repo"), trust, predict=second, store=store).get(
            f"{n:040x}", now=NOW + timedelta(minutes=n)
        )
    assert store.prune_predictions(3) == 4  # of 7: the 3 computed last stay
    assert store.prediction(f"{4:040x}", hashlib.sha256(trust.read_bytes()).hexdigest())
    assert store.prediction("c" * 40, hashlib.sha256(trust.read_bytes()).hexdigest()) is None
    store.close()


def test_predictions_round_trip_through_json() -> None:
    predicted = Predicted(
        NOW,
        {"a": NOW + timedelta(hours=3), "b": None},
        {"b": "frozen until 2027-01-05 (peak season)"},
        problem="one site's calendar could not be read",
    )
    assert from_json(to_json(predicted)) == predicted

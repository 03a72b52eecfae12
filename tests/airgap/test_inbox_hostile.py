"""A USB stick cannot hang the node or redirect what it writes (attack corpus, issue 13 item 7).

Each hostile entry sits next to a good bundle: the good one is imported, the hostile one is
refused with its name and what it is, and the import returns (a FIFO opened for reading
would otherwise block forever, holding the agent's lock). The import runs in a thread with a
deadline so that a regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from airgap_world import NOW, History, drop

from reconciler.node.fetch import CANDIDATE_REF, Mirror
from reconciler.node.inbox import BundleResult, import_inbox

DEADLINE = 60.0


def run_import(mirror: Mirror, inbox: Path) -> list[BundleResult]:
    """import_inbox under a deadline: a hang is a failure, not a stuck suite."""
    results: list[list[BundleResult]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(import_inbox(mirror, inbox, now=NOW))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(DEADLINE)
    if thread.is_alive():
        # Unblock a reader stuck on a FIFO so the thread can end, then fail.
        for entry in inbox.rglob("*"):
            if entry.is_fifo():
                with open(os.open(entry, os.O_WRONLY | os.O_NONBLOCK), "wb"):
                    pass
        pytest.fail(f"import_inbox did not return within {DEADLINE:.0f} s (hung on the stick)")
    assert not errors, errors
    return results[0]


@pytest.fixture
def stick(tmp_path: Path, history: History) -> tuple[Mirror, Path, Path]:
    """A fresh plant mirror, an inbox, and a good full bundle of the history's tip on the desk."""
    mirror = Mirror(tmp_path / "state" / "mirror.git")
    inbox = tmp_path / "stick"
    inbox.mkdir()
    good = tmp_path / "desk" / "b-good.bundle"
    history.repo.bundle(good, None, history.c)
    return mirror, inbox, good


def fifo(path: Path) -> None:
    os.mkfifo(path)


def by_name(results: list[BundleResult]) -> dict[str, BundleResult]:
    return {r.name: r for r in results}


HOSTILE: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # name: (make it, the refusal, where it ends up)
    "a-fifo.bundle": (fifo, "a-fifo.bundle is a FIFO (named pipe), not a regular file", "rejected"),
    "a-folder.bundle": (
        lambda p: p.mkdir(),
        "a-folder.bundle is a folder, not a regular file",
        "rejected",
    ),
    "a-link.bundle": (
        lambda p: p.symlink_to("/etc/passwd"),
        "a-link.bundle is a symbolic link; the inbox takes plain files only",
        "rejected",
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_entry_named_bundle_is_refused_and_the_good_one_imported(
    stick: tuple[Mirror, Path, Path], history: History, name: str
) -> None:
    mirror, inbox, good = stick
    make, refusal, folder = HOSTILE[name]
    make(inbox / name)
    drop(good, inbox)

    results = by_name(run_import(mirror, inbox))

    assert results[name].outcome == "rejected"
    assert refusal in results[name].message
    assert results["b-good.bundle"].outcome == "imported", results["b-good.bundle"].message
    assert mirror.resolve(CANDIDATE_REF) == history.c
    # Moved aside by rename (never opened): the inbox is clean for the next tick.
    assert os.path.lexists(inbox / folder / name)
    assert not os.path.lexists(inbox / name)
    if name == "a-link.bundle":
        assert (inbox / folder / name).is_symlink()  # the link itself, /etc/passwd untouched


def test_a_fifo_manifest_refuses_its_bundle_without_hanging(
    stick: tuple[Mirror, Path, Path],
) -> None:
    mirror, inbox, good = stick
    target = drop(good, inbox, manifest=False)
    os.mkfifo(inbox / (target.name + ".manifest.json"))

    [result] = run_import(mirror, inbox)

    assert result.outcome == "rejected"
    assert (
        "b-good.bundle.manifest.json is a FIFO (named pipe), not a regular file" in result.message
    )
    assert mirror.resolve(CANDIDATE_REF) is None
    assert os.path.lexists(inbox / "rejected" / "b-good.bundle.manifest.json")


@pytest.mark.parametrize("folder", ["processed", "rejected"])
def test_a_symlinked_result_folder_is_never_written_through(
    tmp_path: Path, stick: tuple[Mirror, Path, Path], history: History, folder: str
) -> None:
    mirror, inbox, good = stick
    outside = tmp_path / "outside"
    outside.mkdir()
    (inbox / folder).symlink_to(outside)
    drop(good, inbox)
    if folder == "rejected":
        (inbox / "c-garbage.bundle").write_bytes(b"not a bundle\n")

    results = by_name(run_import(mirror, inbox))

    assert list(outside.iterdir()) == []  # nothing moved or written outside the inbox
    name = "b-good.bundle" if folder == "processed" else "c-garbage.bundle"
    note = results[name].note or ""
    assert f"{folder}/ in the inbox is a symbolic link (to {outside}), not a folder" in note
    assert f"{name} stays in the inbox" in note
    assert (inbox / name).is_file()
    if folder == "processed":
        assert results[name].outcome == "imported"
        assert mirror.resolve(CANDIDATE_REF) == history.c
        # The next tick: the same bundle is a replay, and still nothing leaves the inbox.
        again = by_name(run_import(mirror, inbox))
        assert again[name].outcome == "replay"
        assert list(outside.iterdir()) == []


def test_a_fifo_in_place_of_the_result_folder(stick: tuple[Mirror, Path, Path]) -> None:
    mirror, inbox, good = stick
    os.mkfifo(inbox / "processed")
    drop(good, inbox)

    [result] = run_import(mirror, inbox)

    assert result.outcome == "imported"
    assert "processed/ in the inbox is a FIFO (named pipe), not a folder" in (result.note or "")


def test_a_symlinked_outbox_is_never_written_through(tmp_path: Path) -> None:
    """The status copy for headquarters goes to the stick's outbox, never through a link."""
    from reconciler.node.state import StateStore

    outside = tmp_path / "outside"
    outside.mkdir()
    stick = tmp_path / "stick"
    stick.mkdir()
    (stick / "outbox").symlink_to(outside)
    store = StateStore(tmp_path / "state")
    status = {"apiVersion": "outpost/v1", "kind": "SiteStatus", "site": "plant-ostrava"}

    problem = store.write_status(status, stick / "outbox")

    assert problem == (
        f"the status copy was not written to the outbox {stick / 'outbox'}: it is a symbolic "
        "link or not a folder"
    )
    assert list(outside.iterdir()) == []
    assert store.read_status() == status  # the node's own copy is written all the same
    (stick / "outbox").unlink()
    assert store.write_status(status, stick / "outbox") is None
    assert (stick / "outbox" / "outpost-status-plant-ostrava.json").is_file()

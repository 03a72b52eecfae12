"""The agent records that its config passed the schema check, for exactly those bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_fetch_config import GOOD, write

from reconciler.core.errors import ConfigError
from reconciler.node.config import CHECKED_FILE, load_config


@pytest.fixture
def state(tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    folder.mkdir()
    return folder


def test_a_passed_check_is_recorded_only_by_the_agent_run(tmp_path: Path, state: Path) -> None:
    path = write(tmp_path, GOOD)
    load_config(path)
    assert not (state / CHECKED_FILE).exists()  # `agent status` and friends write nothing
    first = load_config(path, remember=True)
    assert (state / CHECKED_FILE).is_file()
    assert load_config(path, remember=True) == first


def test_the_same_bytes_skip_jsonschema(
    tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, GOOD)
    load_config(path, remember=True)
    import reconciler.core.schemas as schemas

    calls: list[str] = []
    real = schemas.validator
    monkeypatch.setattr(schemas, "validator", lambda kind: calls.append(kind) or real(kind))
    load_config(path, remember=True)
    assert calls == []
    path.write_text(GOOD + "  firstApply: gated\n")
    assert load_config(path, remember=True).first_apply == "gated"
    assert calls == ["AgentConfig"]


def test_changed_bytes_are_checked_again_and_refused(tmp_path: Path, state: Path) -> None:
    path = write(tmp_path, GOOD)
    load_config(path, remember=True)
    recorded = (state / CHECKED_FILE).read_text()
    path.write_text(GOOD.replace("healthDeadline: 1h30m", "healthDeadline: soon"))
    with pytest.raises(ConfigError, match=r"spec\.healthDeadline: 'soon' does not match"):
        load_config(path, remember=True)
    assert (state / CHECKED_FILE).read_text() == recorded  # a failed check is not recorded


def test_a_forged_record_for_other_bytes_does_not_pass_a_bad_config(
    tmp_path: Path, state: Path
) -> None:
    (state / CHECKED_FILE).write_text("0" * 64 + "\n")
    path = write(tmp_path, GOOD.replace("kind: AgentConfig", "kind: AgentConfig\nextra: 1"))
    with pytest.raises(ConfigError):
        load_config(path, remember=True)


def test_no_state_directory_yet_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    assert load_config(path, remember=True).site == "de-ber-0042"
    assert not (tmp_path / "state").exists()

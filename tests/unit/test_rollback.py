"""pipeline.rollback's choice of the version to go back to (rollback_target): the version the
current one replaced, or `--to N`; refused when there is none; a re-run of `--to N` that
already happened is a no-op."""

from __future__ import annotations

import pytest

from mlgate.errors import ConfigError
from mlgate.pipeline import rollback


def target(current: str, previous: str | None, to: str | None, held_here: bool = True):
    tags = {} if previous is None else {"mlgate.production.previous": previous}
    return rollback.rollback_target("m", current, tags, to, held_here=held_here)


def test_back_to_the_version_it_replaced() -> None:
    assert target("3", "2", None) == "2"


def test_to_a_named_version() -> None:
    assert target("3", "2", "1") == "1"


def test_a_named_version_wins_even_without_a_previous_one() -> None:
    assert target("3", None, "1") == "1"
    assert target("3", "none", "1") == "1"


@pytest.mark.parametrize("previous", [None, "none", ""])
def test_a_first_deployment_has_nothing_to_roll_back_to(previous: str | None) -> None:
    with pytest.raises(ConfigError) as caught:
        target("1", previous, None)
    assert caught.value.exit_code == 2
    assert caught.value.message == "m version 1 replaced no earlier Production version"
    assert "--to N" in caught.value.fix


def test_a_rerun_of_the_same_rollback_does_nothing() -> None:
    assert target("2", "1", "2") is None


def test_rolling_back_to_itself_without_to_is_refused() -> None:
    """A record that names the current version as its previous one (a corrupted history)."""
    with pytest.raises(ConfigError, match="version 2 is already in Production"):
        target("2", "2", None)


def test_a_version_held_in_the_old_layout_is_moved_into_the_production_model() -> None:
    """Production still on model.name (earlier releases): the same version is a real move."""
    assert target("2", "1", "2", held_here=False) == "2"
    assert target("2", "2", None, held_here=False) == "2"


def test_production_without_an_image_record_is_refused_not_reported() -> None:
    """Its `mlgate.image.*` tags removed by hand: no digest, nothing proves what serves, so the
    rollback fails closed (exit 9) instead of reporting (it once crashed there)."""
    from mlgate.errors import DeployError

    with pytest.raises(DeployError) as caught:
        rollback.served_image("m", "2", {"mlgate.image.repository": "r", "mlgate.image.tag": "t"})
    assert caught.value.exit_code == 9
    assert "m version 2 is in Production, but its image record" in caught.value.message
    assert "nothing was moved" in caught.value.message
    assert "--candidate-version 2" in caught.value.fix
    digest = "sha256:" + "0" * 64
    image = rollback.served_image(
        "m", "2", {"mlgate.image.repository": "r", "mlgate.image.digest": digest}
    )
    assert image.pinned == f"r@{digest}"


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({}, []),
        ({"INPUT_TO_VERSION": "2"}, ["--to", "2"]),
        ({"INPUT_FROM_VERSION": "3"}, ["--from", "3"]),
        ({"INPUT_TO_VERSION": "2", "INPUT_FROM_VERSION": "3"}, ["--to", "2", "--from", "3"]),
    ],
)
def test_the_actions_command_line_passes_to_and_from_when_given(inputs, expected) -> None:
    """The rollback action's one command, run by bash with a stand-in `mlgate` that prints its
    arguments: empty inputs pass no flag; each given one passes its own (`--to`, `--from`)."""
    import json
    import subprocess
    from pathlib import Path

    import yaml

    action = yaml.safe_load(
        (Path(__file__).parents[2] / ".github/actions/rollback/action.yml").read_text()
    )
    (step,) = action["runs"]["steps"]
    env = {"INPUT_REASON": "bad scores", "INPUT_TO_VERSION": "", "INPUT_FROM_VERSION": "", **inputs}
    printed = subprocess.run(
        [
            "bash",
            "-c",
            'mlgate() { python3 -c "import json,sys; print(json.dumps(sys.argv[1:]))" "$@"; }\n'
            + step["run"],
        ],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    argv = json.loads(printed)
    assert argv == ["rollback", "--reason", "bad scores", *expected]

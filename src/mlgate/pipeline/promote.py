"""Stage 4: promote a candidate that passed the gate to Staging, or record why it did not.

Promotion only moves registry pointers: the `staging` alias and, for users who still use
stages, the Staging stage (the previous Staging version archived). It consumes the decision that
evaluation logged on the candidate's run and refuses to act on a stale one: if the champion has
changed since the evaluation, the comparison no longer holds. Re-running a promotion that
already happened changes nothing and succeeds.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlgate import cli
from mlgate.errors import GateFailed
from mlgate.gate.decision import DECISION_ARTIFACT, DIGEST_TAG, check_schema
from mlgate.github import outputs as github
from mlgate.registry import moves as registry
from mlgate.registry import tracking
from mlgate.registry.moves import find_champion, get_version
from mlgate.settings import Settings

STAGING = "staging"


@dataclass(frozen=True)
class Promotion:
    version: str
    message: str
    staged: bool = False  # the candidate holds the staging alias afterwards
    changed: bool = False  # this call moved it
    previous: str | None = None  # the version that held it before


def load_decision(client: Any, settings: Settings, candidate_version: str) -> dict[str, Any]:
    """The decision evaluation logged on the candidate's run, refused unless its bytes are
    those whose sha256 evaluation tagged on the version (`DIGEST_TAG`)."""
    return read_decision(client, settings, candidate_version)[0]


def read_decision(
    client: Any, settings: Settings, candidate_version: str
) -> tuple[dict[str, Any], str]:
    """`load_decision`, and the sha256 of the bytes read (equal to the version's DIGEST_TAG
    when they were read): what a promotion checks again under the lock."""
    name = settings.model.name
    version = get_version(client, name, candidate_version)
    recorded = dict(version.tags).get(DIGEST_TAG)
    with tracking.errors(f"reading the decision of {name} version {candidate_version}"):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = tracking.run_file(
                    client, version.run_id, f"{DECISION_ARTIFACT}/decision.json", tmp
                )
            except Exception as exc:
                raise GateFailed(
                    f"{name} version {candidate_version} has no decision",
                    fix="run `mlgate evaluate` on it first",
                ) from exc
            raw = Path(path).read_bytes()
    verified(raw, recorded, f"{name} version {candidate_version}")
    return checked_decision(json.loads(raw), candidate_version), hashlib.sha256(raw).hexdigest()


def verified(raw: bytes, recorded: str | None, what: str) -> None:
    """Fail closed unless `raw` (decision.json as read from the artifact store) is what
    evaluation recorded: its sha256 equal to the version's DIGEST_TAG."""
    if not recorded:
        raise GateFailed(
            f"the decision of {what} carries no digest ({DIGEST_TAG}), so it cannot be "
            "checked against what evaluation wrote (recorded by an older mlgate, or an "
            "evaluation that stopped before tagging the version)",
            fix="re-run `mlgate evaluate` on it",
        )
    found = hashlib.sha256(raw).hexdigest()
    if found != recorded:
        raise GateFailed(
            f"the decision of {what} in the artifact store (sha256 {found[:12]}) is not the "
            f"one evaluation recorded ({DIGEST_TAG} {recorded[:12]}): it was changed after "
            "evaluation, or two evaluations of this version crossed",
            fix="re-run `mlgate evaluate` on it, once, and promote what it decides",
        )


def checked_decision(decision: Any, candidate_version: str) -> dict[str, Any]:
    """`decision` if this mlgate reads its schema and it is about `candidate_version`."""
    check_schema(decision)
    if decision["candidate"]["version"] != str(candidate_version):
        raise GateFailed(
            "the decision on the run is for another version", fix="re-run `mlgate evaluate`"
        )
    return dict(decision)


def promote(settings: Settings, candidate_version: str) -> Promotion:
    client = tracking.connect(settings, experiment=False)
    decision, digest = read_decision(client, settings, candidate_version)
    # Reading the champion and moving the alias must not interleave with another promotion:
    # both would compare against the same champion and the later would win on a stale check.
    with tracking.pointer_lock(
        client, settings, f"promotion of version {candidate_version}"
    ) as lock:
        # First finish whatever a killed move left half done (a dry run only reads). What
        # that read of the registry found (aliases, tags) is what the promotion starts from.
        done: list[registry.Finding] = []
        state: registry.ModelState | None = None
        if decision["mode"] != "dry-run":
            done, state = registry.converged(client, settings.model.name, lock=lock)
            _same_decision(settings.model.name, candidate_version, digest, state)
            decision = {**decision, "sha256": digest}  # recorded with the move
        return _promote(client, settings, candidate_version, decision, lock, done, state)


def _same_decision(
    name: str, candidate_version: str, digest: str, state: registry.ModelState
) -> None:
    """Refuse (exit 6, nothing moved or tagged) when the decision recorded on the version now,
    read under the lock, is not the one this promotion read before it: an evaluation of the
    same version re-run meanwhile. The promotion never moves on a decision the registry no
    longer records; its re-run reads the one recorded now."""
    version = state.versions.get(str(candidate_version))
    recorded = None if version is None else version.tags.get(DIGEST_TAG)
    if recorded != digest:
        raise GateFailed(
            f"the decision of {name} version {candidate_version} changed while this promotion "
            f"waited for the lock: it read the decision with sha256 {digest[:12]}, the version "
            f"now records {str(recorded)[:12]} (another evaluation of it was recorded "
            "meanwhile); nothing was moved",
            fix="run `mlgate promote` again: it reads the decision recorded now",
        )


def staged_version(
    client: Any, name: str, state: registry.ModelState | None
) -> tuple[str, Mapping[str, str]] | None:
    """The version holding `staging` and its tags, or None: from `state` when the registry
    was just read under the lock (`registry.converged`), else asked for."""
    if state is None:
        held = tracking.version_by_alias(client, name, STAGING)
        return None if held is None else (str(held.version), dict(held.tags))
    version = state.aliases.get(STAGING)
    if version is None or version not in state.versions:
        return None
    return version, state.versions[version].tags


def _promote(
    client: Any,
    settings: Settings,
    candidate_version: str,
    decision: dict[str, Any],
    lock: registry.PointerLock,
    done: list[registry.Finding],
    state: registry.ModelState | None = None,
) -> Promotion:
    name = settings.model.name
    staged = staged_version(client, name, state)
    if staged is not None and staged[0] == str(candidate_version):
        finished = str(candidate_version) in registry.completed(done, STAGING)
        _clear_rejection(client, name, candidate_version, staged[1])
        return Promotion(
            candidate_version,
            f"{name} version {candidate_version} already holds '{STAGING}': "
            + ("completed the record of its interrupted move" if finished else "nothing to do"),
            staged=True,
            changed=finished,
        )

    if decision["verdict"] != "pass":
        reasons = "; ".join(decision["reasons"])
        if decision["mode"] == "dry-run":
            return Promotion(
                candidate_version,
                f"dry run: version {candidate_version} would be rejected: {reasons}",
            )
        _refuse(client, name, candidate_version, "rejected", reasons)
        for reason in decision["reasons"]:
            github.annotate("error", reason, title="mlgate: not promoted")
        raise GateFailed(
            f"{name} version {candidate_version} was not promoted: {reasons}",
            fix="see the decision table of the evaluation; aliases are untouched",
        )

    champion = find_champion(client, name, candidate_version, settings.model.production_model)
    then = decision["champion"]["version"] if decision["champion"] else None
    message = champion_change(then, champion.version if champion else None, candidate_version)
    if message is not None:
        if decision["mode"] != "dry-run":
            _refuse(client, name, candidate_version, "stale", message)
        raise GateFailed(
            message,
            fix=f"re-run `mlgate evaluate --candidate-version {candidate_version}`, then promote",
        )
    if decision["mode"] == "dry-run":
        return Promotion(
            candidate_version, f"dry run: version {candidate_version} would be promoted to Staging"
        )

    previous = staged[0] if staged is not None else None
    when = datetime.now(UTC).isoformat(timespec="seconds")
    tags = {
        "mlgate.promotion": "staging",
        "mlgate.promotion.staging_at": when,
        "mlgate.promotion.replaced": previous or "none",
        "mlgate.promotion.champion_at_evaluation": then or "none",
    }
    if decision.get("sha256"):  # the decision this move was made on (mlgate.decision.sha256)
        tags["mlgate.promotion.decision_sha256"] = decision["sha256"]
    if settings.github.run_url:
        tags["mlgate.promotion.run_url"] = settings.github.run_url
    tracking.move_alias(
        client,
        name,
        STAGING,
        candidate_version,
        lock=lock,
        tags=tags,
        previous=previous,
        previous_tags={"mlgate.promotion.superseded_by": candidate_version},
    )
    _clear_rejection(client, name, candidate_version)
    return Promotion(
        candidate_version,
        f"{name} version {candidate_version} is now '{STAGING}'"
        + (f" (replacing version {previous})" if previous else ""),
        staged=True,
        changed=True,
        previous=previous,
    )


def champion_change(then: str | None, now: str | None, candidate_version: str) -> str | None:
    """Why the evaluation's comparison is stale (the champion it compared against is not the
    champion now), or None when it still holds."""
    if then == now:
        return None
    return (
        f"the champion changed since the evaluation (was {then or 'none'}, now "
        f"{now or 'none'}): the comparison is stale, so version {candidate_version} was not "
        "promoted"
    )


REASONS = "mlgate.promotion.reasons"


def _refuse(client: Any, name: str, version: str, outcome: str, reasons: str) -> None:
    """Say on the version why it did not move, for whoever reads the registry later, and
    keep it in the registered model's history (the version's tags are cleared when a later
    evaluation promotes it)."""
    at = datetime.now(UTC)
    event = {
        "alias": None,  # no pointer moved
        "outcome": outcome,
        "version": str(version),
        "previous": None,
        "at": at.isoformat(timespec="microseconds"),
        "tags": {"mlgate.promotion": outcome, REASONS: reasons[:1000]},
    }
    with tracking.errors(f"recording why version {version} was not promoted"):
        client.set_model_version_tag(name, version, "mlgate.promotion", outcome)
        client.set_model_version_tag(name, version, REASONS, reasons[:4900])
        client.set_registered_model_tag(
            name,
            f"{tracking.HISTORY}{outcome}.{at:%Y%m%dT%H%M%S.%f}Z.v{version}",
            json.dumps(event, sort_keys=True),
        )


def _clear_rejection(
    client: Any, name: str, version: str, tags: Mapping[str, str] | None = None
) -> None:
    """A promoted version carries no reasons from an earlier rejection (they stay in the
    history). Also run when a promotion is re-run, so a crash after the move is completed."""
    if tags is None:
        with tracking.errors(f"reading the tags of version {version}"):
            tags = client.get_model_version(name, version).tags
    if REASONS in tags:
        with tracking.errors(f"clearing the earlier rejection of version {version}"):
            client.delete_model_version_tag(name, version, REASONS)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """mlgate promote: give the staging alias to a candidate whose decision passed."""
    parser = cli.stage_parser("promote", main.__doc__)
    cli.add_candidate_version(parser, "that was evaluated")
    args = parser.parse_args(argv)

    def action() -> int:
        settings = cli.settings_from(args, env)
        result = promote(settings, args.candidate_version)
        print(result.message, flush=True)
        github.write_outputs(
            settings.github,
            {
                "staged": str(result.staged).lower(),
                "staging-version": result.version if result.staged else "",
            },
        )
        github.write_summary(
            settings.github, f"### {'⬆️' if result.changed else 'ℹ️'} Promotion\n{result.message}"
        )
        return 0

    return cli.run(action)

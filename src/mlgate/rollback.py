"""Stage: move Production back to the version it replaced, in one step.

The target is the version recorded as `mlgate.production.previous` on the current Production
version (or `--to N`); rolling back again goes further back, never forward to a withdrawn
version. It must have been in Production before and its image, by digest, must
still be in the registry: a rollback never points Production at a model that cannot be served.
Who rolled back, why and from which version are tagged on both versions. Staging is untouched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from mlgate import cli, github, registry, tracking
from mlgate.deploy import (
    PRODUCTION,
    Deployment,
    Image,
    _now,
    approvers,
    connect_docker,
    image_repository,
    model_digest,
    move_production,
    report,
    summarise_lineage,
    trusted_record,
    verify_image,
)
from mlgate.errors import ConfigError, DeployError
from mlgate.evaluate import get_version
from mlgate.settings import Settings


def rollback(
    settings: Settings,
    *,
    reason: str,
    to: str | None = None,
    approved_by: Sequence[str] = (),
) -> Deployment:
    client = tracking.connect(settings)
    with tracking.pointer_lock(client, settings, "rollback") as lock:
        # First finish whatever a killed move left half done, then decide on what holds.
        done = registry.converge(client, settings.model.name, lock=lock)
        return _rollback(
            client, settings, reason=reason, to=to, approved_by=approved_by, lock=lock, done=done
        )


def _rollback(
    client,
    settings: Settings,
    *,
    reason: str,
    to: str | None,
    approved_by: Sequence[str],
    lock,
    done: list[registry.Finding],
) -> Deployment:
    name = settings.model.name
    current = tracking.version_by_alias(client, name, PRODUCTION)
    if current is None:
        raise ConfigError(
            f"{name} has no version in Production: nothing to roll back",
            fix="deploy a version first (`mlgate deploy`)",
        )
    current_version = str(current.version)
    if current_version in registry.completed(done, PRODUCTION):
        image = Image.recorded(get_version(client, name, current_version).tags)
        return Deployment(
            current_version,
            image,
            f"completed the record of the interrupted move of {name} to version "
            f"{current_version}; nothing else moved (run again to roll back from it)",
            changed=True,
            reused_image=True,
        )
    target = to or current.tags.get("mlgate.production.previous")
    if not target or target == "none":
        raise ConfigError(
            f"{name} version {current_version} replaced no earlier Production version",
            fix="name the version to go back to with --to N",
        )
    if target == current_version:
        if to is not None:  # `--to N` names the outcome: a re-run of the same rollback
            image = Image.recorded(get_version(client, name, current_version).tags)
            return Deployment(
                current_version,
                image,
                f"{name} version {target} is already in Production: nothing to do",
                reused_image=True,
            )
        raise ConfigError(
            f"version {target} is already in Production", fix="name another version with --to N"
        )
    tags = dict(get_version(client, name, target).tags)
    if Image.recorded(tags) is None or "mlgate.production.since" not in tags:
        raise ConfigError(
            f"{name} version {target} was never deployed (no image or Production record)",
            fix="roll back to a version that was in Production, or deploy it with the "
            "deploy workflow",
        )
    image = verified_target(settings, client, target, tags)
    who = approvers(settings, approved_by) or [settings.github.actor or "unknown"]
    # mlgate.production.previous keeps what the target replaced when it was first deployed, so
    # a second rollback goes further back instead of forward to the withdrawn version; and
    # mlgate.production.approved_by keeps who approved it then: the rollback's own decider is
    # mlgate.rollback.by, never written over the original approval.
    record = {
        "mlgate.production.since": _now(),
        "mlgate.production.image": image.pinned,
        "mlgate.rollback.from": current_version,
        "mlgate.rollback.reason": reason[:4900],
        "mlgate.rollback.by": ", ".join(who),
    }
    if settings.github.run_url:
        record["mlgate.production.run_url"] = settings.github.run_url
    # What the withdrawn version says about the rollback is part of the move: a re-run after a
    # crash completes it from the pending record.
    withdrawn = {"mlgate.rollback.rolled_back": "true", "mlgate.rollback.reason": reason[:4900]}
    move_production(client, name, target, record, current_version, lock, withdrawn)
    github.annotate(
        "notice",
        f"{name}: Production rolled back from version {current_version} to {target}: {reason}",
        title="mlgate rollback",
    )
    return Deployment(
        target,
        image,
        f"{name} rolled back: version {target} is in Production again, served by "
        f"{image.pinned} (version {current_version} withdrawn: {reason})",
        changed=True,
        previous=current_version,
        reused_image=True,
    )


def verified_target(settings: Settings, client, target: str, tags: Mapping[str, str]) -> Image:
    """The recorded image of `target`, if it provably holds `target`'s model: in the
    configured repository (checked before any request, so credentials never go to a host
    named by a tag), held by the registry at that digest, its labels and bundle.json naming
    the sha256 of `target`'s logged booster and its run. Else the rollback is refused."""
    name = settings.model.name
    redeploy = (
        f"re-deploy version {target} deliberately (`mlgate deploy --candidate-version {target} "
        "--set deploy.require_staging=false`: it rebuilds a verified image), or roll back to "
        "another version with --to N"
    )
    image, ignored = trusted_record(tags, image_repository(settings))
    if image is None:
        raise DeployError(
            f"refusing to roll back {name} to version {target}: {ignored}", fix=redeploy
        )
    model = model_digest(client, name, target)
    why = verify_image(settings, connect_docker(), image, model)
    if why is not None:
        raise DeployError(
            f"refusing to roll back {name} to version {target}: its image {image.pinned} does "
            f"not hold that version's model (sha256 {model.sha256[:12]}, run {model.run_id}): "
            f"{why}",
            fix=redeploy,
        )
    return image


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """mlgate rollback: move Production back to the version it replaced."""
    parser = cli.stage_parser("rollback", main.__doc__)
    parser.add_argument("--reason", required=True, help="why; recorded on both versions")
    parser.add_argument(
        "--to",
        type=cli.model_version,
        metavar="N",
        help="the version to go back to (default: the one Production replaced)",
    )
    parser.add_argument(
        "--approved-by",
        action="append",
        default=[],
        metavar="LOGIN",
        help="who decided (default: the run's approvers, else the actor)",
    )
    args = parser.parse_args(argv)

    def action() -> int:
        settings = cli.settings_from(args, os.environ if env is None else env)
        if not args.reason.strip():
            raise ConfigError("--reason is empty", fix="say why Production goes back")
        result = rollback(
            settings, reason=args.reason.strip(), to=args.to, approved_by=args.approved_by
        )
        report(settings, result, title="Rollback")
        summarise_lineage(settings, result.version)
        return 0

    return cli.run(action)

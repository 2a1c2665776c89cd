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

from mlgate import cli, github, tracking
from mlgate.deploy import (
    PRODUCTION,
    Deployment,
    Image,
    _now,
    approvers,
    move_production,
    registry_holds,
    report,
    summarise_lineage,
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
        return _rollback(client, settings, reason=reason, to=to, approved_by=approved_by, lock=lock)


def _rollback(
    client, settings: Settings, *, reason: str, to: str | None, approved_by: Sequence[str], lock
) -> Deployment:
    name = settings.model.name
    current = tracking.version_by_alias(client, name, PRODUCTION)
    if current is None:
        raise ConfigError(
            f"{name} has no version in Production: nothing to roll back",
            fix="deploy a version first (`mlgate deploy`)",
        )
    current_version = str(current.version)
    if tracking.finish_pending(client, name, PRODUCTION, current):
        image = Image.recorded(current.tags)
        return Deployment(
            current_version,
            image,
            f"completed the record of the interrupted move of {name} to version "
            f"{current_version}; nothing else moved (run again to roll back from it)",
            reused_image=True,
        )
    target = to or current.tags.get("mlgate.production.previous")
    if not target or target == "none":
        raise ConfigError(
            f"{name} version {current_version} replaced no earlier Production version",
            fix="name the version to go back to with --to N",
        )
    if target == current_version:
        raise ConfigError(
            f"version {target} is already in Production", fix="name another version with --to N"
        )
    tags = dict(get_version(client, name, target).tags)
    image = Image.recorded(tags)
    if image is None or "mlgate.production.since" not in tags:
        raise ConfigError(
            f"{name} version {target} was never deployed (no image or Production record)",
            fix="roll back to a version that was in Production, or deploy it with the "
            "deploy workflow",
        )
    if registry_holds(settings, image.pinned) != image.digest:
        raise DeployError(
            f"the image of version {target} ({image.pinned}) is no longer in the registry",
            fix="re-deploy that version (it rebuilds the image), or roll back to another "
            "with --to N",
        )
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
    move_production(client, name, target, record, current_version, lock)
    with tracking.errors(f"recording the rollback on version {current_version}"):
        client.set_model_version_tag(name, current_version, "mlgate.rollback.rolled_back", "true")
        client.set_model_version_tag(name, current_version, "mlgate.rollback.reason", reason[:4900])
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

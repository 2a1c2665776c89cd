"""Stage: move Production back to the version it replaced, in one step.

The target is the version recorded as `mlgate.production.previous` on the current Production
version (or `--to N`); rolling back again goes further back, never forward to a withdrawn
version. It must have been in Production before and its image, by digest, must
still be in the registry: a rollback never points Production at a model that cannot be served.
Who rolled back, why and from which version are tagged on both versions. Staging is untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mlgate import cli
from mlgate.errors import ConfigError, DeployError, GateFailed, ModelError, ProductionLost
from mlgate.github import environment
from mlgate.github import outputs as github
from mlgate.github.environment import NOBODY, UNPROTECTED_TAG
from mlgate.pipeline.deploy import (
    PRODUCTION,
    Deployment,
    Image,
    ModelDigest,
    _held_here,
    _now,
    connect_docker,
    docker_errors,
    image_repository,
    model_digest,
    move_production,
    record_image,
    registry_digest,
    report,
    summarise_lineage,
    trusted_record,
    verify_image,
)
from mlgate.registry import moves as registry
from mlgate.registry import tracking
from mlgate.registry.moves import get_version
from mlgate.settings import Settings


def rollback(
    settings: Settings,
    *,
    reason: str,
    to: str | None = None,
    approved_by: Sequence[str] = (),
    expected: str | None = None,
) -> Deployment:
    # Who decided, read as a deployment's approval is (fail closed, never "unknown").
    approval = environment.require_approval(settings, approved_by)
    client = tracking.connect(settings, experiment=False)
    holder_model = settings.model.production_model
    with tracking.pointer_lock(client, settings, "rollback", name=holder_model) as lock:
        if holder_model != settings.model.name:  # this credential may write Production?
            registry.ensure_production_model(client, settings.model.name, holder_model, lock)
        # First finish whatever a killed move left half done, then decide on what holds.
        done = registry.converge(client, holder_model, lock=lock)
        return _rollback(
            client,
            settings,
            reason=reason,
            to=to,
            approval=approval,
            lock=lock,
            done=done,
            expected=expected,
        )


def _rollback(
    client: Any,
    settings: Settings,
    *,
    reason: str,
    to: str | None,
    approval: environment.Approval,
    lock: registry.PointerLock,
    done: list[registry.Finding],
    expected: str | None = None,
) -> Deployment:
    name, holder_model = settings.model.name, settings.model.production_model
    separate = holder_model != name
    current = registry.production(client, settings)
    if current is None:
        lost = registry.lost_production(client, name, holder_model)
        if lost is not None:
            raise ProductionLost(
                f"{lost}: nothing to roll back from, and nothing was moved",
                fix=registry.LOST_FIX,
            )
        raise ConfigError(
            f"{name} has no version in Production: nothing to roll back",
            fix="deploy a version first (`mlgate deploy`)",
        )
    current_version = current.version
    if current.holder.name == holder_model and str(current.holder.version) in (
        registry.completed(done, PRODUCTION)
    ):
        return Deployment(
            current_version,
            served_image(name, current_version, current.tags),
            f"completed the record of the interrupted move of {name} to version "
            f"{current_version}; nothing else moved (run again to roll back from it)",
            changed=True,
            reused_image=True,
        )
    target = rollback_target(
        name, current_version, current.tags, to, held_here=current.holder.name == holder_model
    )
    if target is None:  # `--to N` names the outcome: a re-run of the same rollback
        return Deployment(
            current_version,
            served_image(name, current_version, current.tags),
            f"{name} version {current_version} is already in Production: nothing to do",
            reused_image=True,
        )
    if expected is not None and expected != current_version:
        refused = GateFailed(
            f"refusing to roll back {name}: Production holds version {current_version} now, not "
            f"version {expected} (--from): another deploy or rollback moved it since you "
            "looked; nothing was moved",
            fix=f"check `mlgate lineage {current_version}`; if version {current_version} must "
            f"go too, run the rollback again with --from {current_version}",
        )
        # In the history beside the move that won, under the version it meant to withdraw.
        registry.record_refusal(
            client,
            holder_model,
            expected,
            command="rollback",
            reasons=refused.message,
            lock=lock,
            original=f"{name}/{expected}" if separate else None,
        )
        raise refused
    if to is None and not _exists(client, name, target):
        raise ConfigError(
            f"nothing to roll back to: version {target}, which {name} version "
            f"{current_version} replaced in Production, was deleted from the registry",
            fix="name the version to go back to with --to N (one that was in Production: "
            f"`mlgate lineage {current_version}` lists what it replaced)",
        )
    tags = target_record(client, settings, target)
    if "mlgate.production.since" not in tags:
        raise ConfigError(
            f"{name} version {target} was never deployed (no Production record)",
            fix="roll back to a version that was in Production, or deploy it with the "
            "deploy workflow",
        )
    if Image.recorded(tags) is None:  # its mlgate.image.* tags removed: no digest to verify
        raise DeployError(
            f"refusing to roll back {name} to version {target}: it was in Production (since "
            f"{tags['mlgate.production.since']}) but its image record (mlgate.image.digest) is "
            "gone, so what would serve it cannot be proven; nothing was moved",
            fix=redeploy_fix(target),
        )
    image, model = verified_target(settings, client, target, tags)
    holder = target
    if separate:  # the target's copy in the production model, made now if it has none
        copy = registry.ensure_copy(client, name, target, model.sha256, holder_model, lock)
        holder = str(copy.version)
        if Image.recorded(copy.tags) != image:
            lock.check(f"recording the image on {holder_model} version {holder}")
            record_image(client, holder_model, holder, image)
    who = list(approval.approved_by) or [NOBODY]
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
    if approval.unprotected:
        record[UNPROTECTED_TAG] = approval.tags()[UNPROTECTED_TAG]
    if separate:
        record[registry.COPY_OF] = f"{name}/{target}"
        record.setdefault(
            "mlgate.production.previous", tags.get("mlgate.production.previous", "none")
        )
        record.setdefault(
            "mlgate.production.approved_by", tags.get("mlgate.production.approved_by", NOBODY)
        )
    if settings.github.run_url:
        record["mlgate.production.run_url"] = settings.github.run_url
    # What the withdrawn version says about the rollback is part of the move: a re-run after a
    # crash completes it from the pending record.
    withdrawn = {
        "mlgate.rollback.rolled_back": "true",
        "mlgate.rollback.reason": reason[:4900],
        "mlgate.production.replaced_by": target,
    }
    move_production(
        client, holder_model, holder, record, _held_here(current, holder_model), lock, withdrawn
    )
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


def redeploy_fix(version: str) -> str:
    return (
        f"re-deploy version {version} deliberately (`mlgate deploy --candidate-version {version} "
        "--set deploy.require_staging=false`: it rebuilds a verified image), or roll back to "
        "another version with --to N; `mlgate doctor` lists every version whose image record "
        "is gone"
    )


def served_image(name: str, version: str, tags: Mapping[str, str]) -> Image:
    """The image recorded on the version holding Production (`tags`: the holder's own, where
    deploy records it). Its `mlgate.image.*` tags removed by hand: no digest, so nothing proves
    what serves, and the rollback fails closed (DeployError) rather than report an unknown."""
    image = Image.recorded(tags)
    if image is None:
        raise DeployError(
            f"{name} version {version} is in Production, but its image record "
            "(mlgate.image.digest) is gone, so what serves it cannot be proven; nothing was "
            "moved",
            fix=redeploy_fix(version),
        )
    return image


def rollback_target(
    name: str,
    current_version: str,
    current_tags: Mapping[str, str],
    to: str | None,
    *,
    held_here: bool,
) -> str | None:
    """The version a rollback from `current_version` moves Production to: `--to N`, else the
    version the current one replaced. None: `--to N` names the version already in Production
    (held in the production model: a re-run, nothing to do); ConfigError when there is none."""
    target = to or current_tags.get("mlgate.production.previous")
    if not target or target == "none":
        raise ConfigError(
            f"{name} version {current_version} replaced no earlier Production version",
            fix="name the version to go back to with --to N",
        )
    if target == current_version and held_here:
        if to is not None:
            return None
        raise ConfigError(
            f"version {target} is already in Production", fix="name another version with --to N"
        )
    return target


def _exists(client: Any, name: str, version: str) -> bool:
    from mlflow.exceptions import MlflowException

    with tracking.errors(f"reading {name} version {version}"):
        try:
            client.get_model_version(name, version)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return False
    return True


def target_record(client: Any, settings: Settings, target: str) -> dict[str, str]:
    """What the registry says about `target`'s time in Production: its copy's tags in the
    production model (writable only by the Environment), else, for a version deployed in the
    layout of earlier releases, its own tags."""
    name, holder_model = settings.model.name, settings.model.production_model
    original = get_version(client, name, target)
    if holder_model != name:
        copy = registry.find_copy(client, holder_model, name, target)
        if copy is not None and "mlgate.production.since" in copy.tags:
            own = {k: v for k, v in original.tags.items() if not k.startswith(registry.NOT_COPIED)}
            return {**own, **dict(copy.tags)}
    return dict(original.tags)


def verified_target(
    settings: Settings, client: Any, target: str, tags: Mapping[str, str]
) -> tuple[Image, ModelDigest]:
    """The recorded image of `target`, if it provably holds `target`'s model: in the
    configured repository (checked before any request, so credentials never go to a host
    named by a tag), held by the registry at that digest, its labels and bundle.json naming
    the sha256 of `target`'s logged booster and its run. Else the rollback is refused."""
    name = settings.model.name
    redeploy = redeploy_fix(target)
    image, ignored = trusted_record(tags, image_repository(settings))
    if image is None:
        raise DeployError(
            f"refusing to roll back {name} to version {target}: {ignored}", fix=redeploy
        )
    try:
        model = model_digest(client, name, target)
    except ModelError as exc:  # its run's files are gone: nothing to verify the image against
        raise ModelError(
            f"refusing to roll back {name} to version {target}: {exc.message}; nothing was moved",
            fix=exc.fix,
        ) from exc
    why = verify_image(settings, connect_docker(), image, model)
    if why is not None:
        raise DeployError(
            f"refusing to roll back {name} to version {target}: its image {image.pinned} does "
            f"not hold that version's model (sha256 {model.sha256[:12]}, run {model.run_id}): "
            f"{why}",
            fix=redeploy,
        )
    why = moved_tag(settings, image)
    if why is not None:
        raise DeployError(
            f"refusing to roll back {name} to version {target}: its image {image.pinned} holds "
            f"that version's model, but {why}",
            fix=f"find out who pushed {image.ref}; then restore the tag to the verified digest "
            f"(`docker pull {image.pinned} && docker tag {image.pinned} {image.ref} && docker "
            f"push {image.ref}`) and roll back again, or roll back to another version with --to N",
        )
    return image, model


def moved_tag(settings: Settings, image: Image) -> str | None:
    """Why `image`'s content-addressed tag (`vN-<sha12>`, which mlgate never rewrites) no
    longer names its digest, or None when it does. A tag re-pushed with another image leaves
    the recorded digest untagged: a registry garbage collection deletes it, so Production would
    point at an image about to vanish, and someone wrote where only mlgate writes."""
    with docker_errors(f"looking up {image.ref} in the registry"):
        held = registry_digest(connect_docker(), image.ref, settings.registry.auth_config())
    if held == image.digest:
        return None
    if held is None:
        return (
            f"its tag {image.ref} is gone from the registry, so the digest is untagged (a "
            "garbage collection deletes it)"
        )
    return (
        f"its tag {image.ref} names {held} now: someone re-pushed the tag, and the recorded "
        "digest is untagged (a garbage collection deletes it)"
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
        "--from",
        dest="expected",
        type=cli.model_version,
        metavar="N",
        help="the version you saw in Production and mean to withdraw: refused, nothing moved, "
        "when Production holds another once the lock is taken (a deploy or rollback landed)",
    )
    parser.add_argument(
        "--approved-by",
        action="append",
        default=[],
        metavar="LOGIN",
        help="who decided; outside GitHub Actions only (there: the run's approvals of the "
        "Environment, as for a deployment)",
    )
    args = parser.parse_args(argv)

    def action() -> int:
        settings = cli.settings_from(args, env)
        if not args.reason.strip():
            raise ConfigError("--reason is empty", fix="say why Production goes back")
        result = rollback(
            settings,
            reason=args.reason.strip(),
            to=args.to,
            approved_by=args.approved_by,
            expected=args.expected,
        )
        report(settings, result, title="Rollback")
        summarise_lineage(settings, result.version)
        return 0

    return cli.run(action)

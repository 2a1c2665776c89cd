"""mlgate doctor: do a model's aliases, stages, tags, history, pending records and lock agree?

It reads the registry, says each disagreement in plain words and, with --repair, takes the lock
and repairs exactly what a re-run of the interrupted promotion, deploy or rollback would
(`registry.converge`): stages to match the aliases, the tags and history event of a move whose
alias moved, pending records removed once all of that agrees, expired lock tickets deleted.
It also finds a run with two versions (a registration request the registry committed after
its retry) and keeps the lowest, as registration itself does (`tracking.drop_duplicate_versions`).
It never moves an alias: the aliases are the commit point of every move.

Exit codes: 0 all agree; 12 something disagreed (the message says whether it was repaired);
the usual codes otherwise (5 MLflow failing or the lock busy, 2 bad usage).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mlgate import cli
from mlgate.errors import ConfigError, RegistryDisagreement
from mlgate.github import outputs as github
from mlgate.registry import moves as registry
from mlgate.registry import tracking
from mlgate.settings import Settings


def problems(findings: Sequence[registry.Finding]) -> list[registry.Finding]:
    """The findings that are wrong (a live lock ticket is news, not a disagreement)."""
    return [f for f in findings if not (f.kind == "ticket" and not f.action)]


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """mlgate doctor: report (and with --repair, repair) disagreements of a model's pointers."""
    parser = cli.stage_parser("doctor", main.__doc__)
    parser.add_argument(
        "--repair",
        action="store_true",
        help="take the lock and repair what a re-run of the interrupted move would",
    )
    args = parser.parse_args(argv)

    def action() -> int:
        from mlflow.exceptions import MlflowException

        settings = cli.settings_from(args, env)
        client = tracking.connect(settings, experiment=False)
        name = settings.model.name
        missing = False
        with tracking.errors(f"reading the registered model '{name}'"):
            try:
                client.get_registered_model(name)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                missing = True
        if missing:
            raise ConfigError(
                f"there is no registered model '{name}'",
                fix="pass the model's name with --model-name (or model.name)",
            )
        for note in layout_notes(client, settings):
            print(f"- note: {note}", flush=True)
        names = [name] + production_model(client, settings)
        states = [registry.read_state(client, model, with_tickets=True) for model in names]
        findings = [f for state in states for f in registry.inspect(state)]
        images = [f for state in states for f in unproven_images(state)]
        images += lost(client, settings)
        for finding in findings + images:
            print(f"- {finding.message}", flush=True)
        extras = tracking.duplicate_versions(client, name)
        for extra in extras:
            print(f"- {extra.message}", flush=True)
        wrong = problems(findings) + images + extras
        if not wrong:
            print(f"{name}: aliases, stages, tags, history and lock agree", flush=True)
            github.write_summary(settings.github, f"### 🩺 {name}\nAll pointers agree.")
            return 0
        if not args.repair:
            raise RegistryDisagreement(
                f"{name}: {len(wrong)} disagreement(s) found; nothing was changed",
                fix=registry.LOST_FIX
                if any(f.kind == "lost" for f in images)
                else IMAGE_FIX
                if len(images) == len(wrong)
                else "run `mlgate doctor --repair` (or re-run the interrupted promote, deploy or "
                "rollback)",
            )
        done: list[registry.Finding | tracking.Duplicate] = []
        done += tracking.drop_duplicate_versions(client, name)
        for model in names:
            with tracking.pointer_lock(client, settings, "doctor --repair", name=model) as lock:
                done += registry.converge(client, model, lock=lock)
        states = [registry.read_state(client, model, with_tickets=True) for model in names]
        left: list[registry.Finding | tracking.Duplicate] = [
            *problems([f for state in states for f in registry.inspect(state)]),
            *[f for state in states for f in unproven_images(state)],
            *lost(client, settings),
            *tracking.duplicate_versions(client, name),
        ]
        for repaired in done:
            print(f"repaired: {repaired.message}", flush=True)
        if left:
            image = [f for f in left if isinstance(f, registry.Finding) and f.kind == "image"]
            raise RegistryDisagreement(
                f"{name}: {len(wrong)} disagreement(s) found, {len(left)} still left after the "
                f"repair: {left[0].message}",
                fix=registry.LOST_FIX
                if any(isinstance(f, registry.Finding) and f.kind == "lost" for f in left)
                else IMAGE_FIX
                if image
                else "if a move is running, re-run doctor when it ends; else check the MLflow "
                "server",
            )
        github.write_summary(
            settings.github, f"### 🩺 {name}\n{len(wrong)} disagreement(s) found and repaired."
        )
        raise RegistryDisagreement(
            f"{name}: {len(wrong)} disagreement(s) found and repaired; all agree now",
            fix="nothing left to do; find out which job was killed mid-move",
        )

    return cli.run(action)


IMAGE_DIGEST = "mlgate.image.digest"  # what deploy records (pipeline.deploy.Image.recorded)
IMAGE_FIX = (
    "doctor never writes an image record (it cannot prove which image holds the model): "
    "re-deploy each such version deliberately (`mlgate deploy --candidate-version N --set "
    "deploy.require_staging=false` rebuilds and verifies its image), or leave it and roll back "
    "only to others"
)


def unproven_images(state: registry.ModelState) -> list[registry.Finding]:
    """Versions that were moved to Production (their `mlgate.production.since`) whose image
    record (`mlgate.image.digest`) is gone, removed by hand: nothing proves what serves (or
    would serve) them, so a rollback to them, or from the one in Production, is refused. No
    repair: only a deploy writes a verified image."""
    production = state.aliases.get(registry.PRODUCTION)
    found = []
    for number, version in sorted(state.versions.items(), key=lambda item: int(item[0])):
        tags = version.tags
        if "mlgate.production.since" not in tags or tags.get(IMAGE_DIGEST):
            continue
        if number == production:
            message = (
                f"{state.name} version {number} holds '{registry.PRODUCTION}' but its image "
                f"record ({IMAGE_DIGEST}) is gone: what serves it cannot be proven, and a "
                "rollback from it is refused"
            )
        else:
            message = (
                f"{state.name} version {number} was in Production but its image record "
                f"({IMAGE_DIGEST}) is gone: a rollback to it is refused"
            )
        found.append(registry.Finding("image", message, ()))
    return found


def lost(client: Any, settings: Settings) -> list[registry.Finding]:
    """Production lost: the history says a version held it, and none does now (that version
    deleted, and its alias with it). No repair: only a deliberate deploy chooses what serves."""
    if registry.production(client, settings) is not None:
        return []
    why = registry.lost_production(client, settings.model.name, settings.model.production_model)
    if why is None:
        return []
    return [registry.Finding("lost", why, ())]


def production_model(client: Any, settings: Settings) -> list[str]:
    """[model.production_name] when it is set and exists, else []."""
    from mlflow.exceptions import MlflowException

    held = settings.model.production_model
    if held == settings.model.name:
        return []
    with tracking.errors(f"reading the production model '{held}'"):
        try:
            client.get_registered_model(held)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return []
    return [held]


def layout_notes(client: Any, settings: Settings) -> list[str]:
    """Where Production lives, and how to move it behind the Environment's credentials
    (docs/production-registry.md): never a disagreement, a migration to make."""
    name, held = settings.model.name, settings.model.production_model
    legacy = tracking.version_by_alias(client, name, registry.PRODUCTION)
    if held == name:
        if legacy is None:
            return []
        return [
            f"'{registry.PRODUCTION}' is on {name} itself (version {legacy.version}), which "
            "every credential that trains or promotes can write: set model.production_name "
            f"(e.g. {name}-production), grant it as docs/production-registry.md says, and the "
            "next deploy copies the approved version there and moves Production onto it"
        ]
    found = registry.production(client, settings)
    if legacy is None:
        return []
    if found is not None and found.holder.name == held:
        return [
            f"{name} still carries the '{registry.PRODUCTION}' alias of the earlier layout "
            f"(version {legacy.version}); Production is read from {held} (version "
            f"{found.version}). Remove the stale alias with an admin credential: "
            f"MlflowClient().delete_registered_model_alias('{name}', '{registry.PRODUCTION}')"
        ]
    return [
        f"Production is still read from {name} version {legacy.version} (the earlier layout): "
        f"the next deploy or rollback with the Environment's credential copies it into {held} "
        "and moves Production there"
    ]

"""Registry pointer moves that survive crashes and races: the lock and the move's state machine.

The lock (`PointerLock`) is a ticket lock kept in the registry itself, so it works for every
caller of the same MLflow server, whatever runs them:

* One registered model per model, `mlgate-lock.<name>`, created once with the marker tag
  `mlgate.lock` and never deleted. A registered model of that name without the marker is a user's
  model: mlgate refuses to use it (ConfigError) and never touches it.
* Taking the lock creates a new *version* of that model, the ticket, tagged with its holder and
  its lease expiry in the same call. MLflow numbers versions inside one transaction that first
  updates the registered model's row (`create_model_version` in its SQL store), so creations are
  serialised by that row lock: a ticket is committed before the next number is handed out, and
  numbers are never reused (deleting a version only marks it deleted). A ticket that sees no
  *live* ticket (not deleted, lease not over) below its own number holds the lock; one that does
  withdraws (deletes its own ticket) and waits.
* Nobody deletes another's live ticket. Waiters delete only tickets whose lease is over, and a
  lease is extended only while it is live with more than the margin left, so an expired ticket
  can never become live again: deleting it needs no compare-and-delete. That removes the race of
  the old lock (read the holder, then delete the lock another waiter had just re-created).
* While it holds, a daemon thread of the holder (the heartbeat) pushes its ticket's expiry
  `lease` seconds ahead every `lease / 8` seconds, so a live holder slowed by a busy machine
  keeps its lock however long its move takes. A beat is sent only while the holder's own
  deadline (below) has not passed, and moves that deadline only once the registry accepted it;
  a ticket deleted meanwhile (its lease ran out, a waiter took over) stays deleted: the beat
  fails and the holder has lost the lock. A holder whose whole process is stopped (SIGSTOP, a
  frozen VM) for longer than its lease cannot renew, and is treated as dead: a waiter takes
  over, and once the holder runs again its next check fails (exit 5) before it writes.
* A holder stops `lease / 4` (the safety margin) before its lease ends, by its own monotonic
  clock (counted from the last beat the registry accepted), and before every registry call of
  a move it also re-reads the tickets: its own must still be there with no live ticket below
  it. A waiter counts a ticket dead only when the lease written on it has passed by the
  waiter's clock.

Why that is safe: two processes hold at once only if the older holder's registry call lands
after its lease ended, i.e. one registry call took longer than the margin (plus clock skew
between the two machines). So the margin is at least the longest one registry call can take
with MLflow's retries under mlgate's bounds (tracking.request_budget: every attempt its
tracking.timeout, the backoff between; a server's Retry-After is not obeyed), 68 s with the
defaults (lease 120 s); settings refuse a lease shorter than 4/3 of it (exit 2). `check`
tests the deadline again after its own read, so the write after it starts in time too.

A move (`move_alias`) is a state machine whose commit point is the alias:

    pending record on the version -> alias -> converge: stage of the holder, archive of the
    others, tags of the version and of the one it replaced, one history event -> re-read:
    all agree -> pending record removed

`converge` derives everything after the alias from what the registry holds (aliases, stages,
tags, pending records), so the same code finishes a move in the run that started it and in any
re-run after a crash, and `mlgate doctor` reports (and with --repair applies) the same plan.
A pending record whose alias never moved is dropped: the re-run starts that move again.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlgate import faults
from mlgate.errors import ConfigError, MlgateError, ProductionLost, TrackingError
from mlgate.faults import ALL_FAULT_POINTS
from mlgate.gate.decision import ModelRef
from mlgate.registry.tracking import (
    Client,
    errors,
    refuse_prompt,
    search_versions,
    version_by_alias,
    writes,
)
from mlgate.settings import Settings

LOCK_PREFIX = "mlgate-lock."  # + model name: the registered model holding the tickets
MARKER = "mlgate.lock"  # tag on what mlgate created for the lock; checked before any use
MARKER_VALUE = "ticket-lock/1"
HOLDER, EXPIRES = "mlgate.lock.holder", "mlgate.lock.expires_at"
TICKET_SOURCE = "mlgate-lock:/ticket"  # never read: a ticket has no files
PENDING = "mlgate.pending."  # + alias: a move begun and not yet fully recorded
# + ALIAS.STAMP.vVERSION on the registered model: one tag a move, never rewritten, so the
# registry keeps the whole history of its pointers (`mlgate lineage`, `mlgate metrics`).
HISTORY = "mlgate.history."
STAGE_OF = {"production": "Production", "staging": "Staging"}  # mlgate's aliases
ACTIVE_STAGES = ("Production", "Staging")

# The tags of a move that its history event keeps (who, why, from which run).
HISTORY_TAGS = {
    "mlgate.copy.of",  # a Production move on the production model: which original it copies
    "mlgate.production.previous",  # and the original it replaced (in model.name's numbers)
    "mlgate.production.approved_by",
    "mlgate.production.image",
    "mlgate.production.run_url",
    "mlgate.production.commit",
    "mlgate.rollback.from",
    "mlgate.rollback.reason",
    "mlgate.rollback.by",
    "mlgate.promotion.run_url",
    "mlgate.promotion.champion_at_evaluation",
    "mlgate.promotion.decision_sha256",
}


def lock_name(name: str) -> str:
    return LOCK_PREFIX + name


# --- the lock -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ticket:
    version: int
    holder: str
    expires: float  # seconds since the epoch, by the holder's clock

    def live(self, now: float) -> bool:
        return now < self.expires

    def describe(self) -> str:
        until = datetime.fromtimestamp(self.expires, UTC).isoformat(timespec="seconds")
        return f"{self.holder} (ticket {self.version}, lease until {until})"


def tickets_of(versions: Iterable[Any]) -> list[Ticket]:  # versions: ModelVersion
    """The tickets among a lock model's versions, lowest first. A version without a holder or a
    readable expiry is a ticket whose lease is over."""
    out = []
    for v in versions:
        tags = v.tags or {}
        try:
            expires = float(tags.get(EXPIRES, "0"))
        except ValueError:
            expires = 0.0
        out.append(Ticket(int(v.version), tags.get(HOLDER, "unknown"), expires))
    return sorted(out, key=lambda t: t.version)


class PointerLock:
    """A lock on one registered model's pointers (aliases and stages): see the module text."""

    def __init__(
        self,
        client: Client,
        name: str,
        *,
        holder: str,
        wait: float,
        lease: float,
        fault_point: str | None = None,
        denied: str | None = None,
        call_budget: float = 0.0,
    ) -> None:
        self.client, self.name, self.lock = client, name, lock_name(name)
        self.denied = denied  # the fix of a PermissionDenied on the lock (Production's)
        self.holder = f"{holder} #{uuid.uuid4().hex[:12]}"
        # The margin: how long before its lease ends a holder stops. At least the longest one
        # registry call can take with its retries (`call_budget`, tracking.request_budget), so
        # a write started before the deadline lands before the lease ends.
        self.wait, self.lease, self.margin = wait, lease, max(lease / 4, call_budget)
        self.fault_point = fault_point
        self.ticket: int | None = None
        self.deadline = 0.0  # time.monotonic() after which this holder moves nothing
        self.lost: str | None = None  # why the heartbeat stopped, when it found the lock lost
        self._stop = threading.Event()
        self._heart: threading.Thread | None = None

    # -- taking and releasing

    def __enter__(self) -> PointerLock:
        self.ensure_lock_model()
        deadline, delay, announced = time.monotonic() + self.wait, 0.05, None
        # The first attempt takes a ticket without reading the others first (the read after
        # taking decides, as always): an uncontended lock costs one search, not two. After a
        # withdrawal, each attempt reads first, so waiters add no tickets while it is held.
        contended = False
        while True:
            with errors(f"taking the lock on {self.name}'s aliases", denied=self.denied):
                live = self._live_tickets() if contended else []
                contended = True
                if not live:
                    mine = self._take()
                    below = [t for t in self._live_tickets() if t.version < mine]
                    if not below:
                        self._beat_start(mine)
                        self.fault("lock.after_ticket")
                        return self
                    self._withdraw()
                    live = below
            first = live[0]
            if first.holder != announced:
                print(
                    f"waiting for the lock on {self.name}'s aliases, held by {first.describe()}",
                    file=sys.stderr,
                    flush=True,
                )
                announced = first.holder
            if time.monotonic() > deadline:
                raise TrackingError(
                    f"{self.name}'s aliases are locked by {first.describe()}; "
                    f"waited {self.wait:g} s",
                    fix="another promotion, deploy or rollback of this model is running: "
                    "re-run when it ends. If its process died, the lock frees itself when the "
                    "lease ends (a re-run then completes what it left half done)",
                )
            pause = min(delay, max(0.05, first.expires - time.time()))
            time.sleep(pause * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.5)  # a move takes well under a second

    def __exit__(self, *exc_info: object) -> None:
        self.stop_renewing()
        try:
            self._withdraw()
        except Exception:  # the lease frees it; never hide the error that got us here
            pass

    # -- the heartbeat: a live holder keeps its lease

    def _beat_start(self, ticket: int) -> None:
        self._stop.clear()
        self.lost = None
        self._heart = threading.Thread(
            target=self._beat, args=(ticket,), name="mlgate-lock-lease", daemon=True
        )
        self._heart.start()

    def stop_renewing(self) -> None:
        """Stop the heartbeat: from here the lease runs out as a dead holder's does."""
        self._stop.set()
        if self._heart is not None:
            # A beat stuck on a slow server must not hold the release: a late beat lands on a
            # ticket that is deleted (it fails) or about to be (the withdraw below).
            self._heart.join(timeout=2.0)
            self._heart = None

    def _beat(self, ticket: int) -> None:
        """Push `ticket`'s expiry `lease` seconds ahead every `lease / 8` seconds while this
        holder's deadline has not passed. The deadline moves only after the registry accepted
        the new expiry, and by what was sent: `start + lease - margin`, `start` taken before the
        call, so a slow call only shortens what this holder believes it has."""
        from mlflow.exceptions import MlflowException

        while not self._stop.wait(self.lease / 8):
            start = time.monotonic()
            if start >= self.deadline:  # too late to extend safely: the lease is given up
                self.lost = "its lease ran out before the heartbeat could renew it"
                return
            expires = time.time() + self.lease
            try:
                self.client.set_model_version_tag(self.lock, str(ticket), EXPIRES, repr(expires))
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":  # deleted: taken over
                    self.lost = f"its ticket {ticket} was deleted (its lease had run out)"
                    return
                continue  # the server may answer the next beat; check() decides
            except Exception:
                continue
            if self._stop.is_set():
                return
            self.deadline = max(self.deadline, start + self.lease - self.margin)

    def ensure_lock_model(self) -> None:
        """The lock's registered model, created once with the marker; a model of that name
        without the marker is someone else's and is never used."""
        from mlflow.exceptions import MlflowException

        for _ in range(3):
            with errors(f"reading the lock of {self.name}'s aliases", denied=self.denied):
                try:
                    tags = self.client.get_registered_model(self.lock).tags
                except MlflowException as exc:
                    if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                        raise
                else:
                    check_marker(self.lock, self.name, tags)
                    return
                try:
                    self.client.create_registered_model(
                        self.lock,
                        tags={MARKER: MARKER_VALUE},
                        description=f"mlgate's lock on the aliases of {self.name}: each version "
                        "is a ticket of one promotion, deploy or rollback. Never delete it.",
                    )
                    return
                except MlflowException as exc:
                    if exc.error_code not in {
                        "RESOURCE_ALREADY_EXISTS",
                        "ALREADY_EXISTS",
                        "RESOURCE_DOES_NOT_EXIST",  # the SQL store's answer to a racing create
                    }:
                        raise
        raise TrackingError(
            f"could not create or read the lock model '{self.lock}'",
            fix="check the MLflow server, then re-run",
        )

    def _take(self) -> int:
        start = time.monotonic()
        expires = time.time() + self.lease
        version = self.client.create_model_version(
            self.lock,
            source=TICKET_SOURCE,
            tags={HOLDER: self.holder, EXPIRES: repr(expires), MARKER: MARKER_VALUE},
            description=f"{self.holder}: lock ticket",
            await_creation_for=0,  # a ticket has no files to wait for
        )
        self.ticket = int(version.version)
        self.deadline = start + self.lease - self.margin
        return self.ticket

    def _withdraw(self) -> None:
        from mlflow.exceptions import MlflowException

        if self.ticket is None:
            return
        ticket, self.ticket = self.ticket, None
        try:
            writes(self.client).delete_model_version(self.lock, str(ticket))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise

    def _live_tickets(self) -> list[Ticket]:
        """Live tickets, lowest first; tickets whose lease is over are deleted on the way
        (they can never become live again, so no compare-and-delete is needed)."""
        from mlflow.exceptions import MlflowException

        now, live = time.time(), []
        versions = search_versions(self.client, self.lock)
        marked = {str(v.version) for v in versions if (v.tags or {}).get(MARKER) == MARKER_VALUE}
        for ticket in tickets_of(v for v in versions if str(v.version) in marked):
            if ticket.live(now) or ticket.version == self.ticket:
                live.append(ticket)
                continue
            try:
                writes(self.client).delete_model_version(self.lock, str(ticket.version))
            except MlflowException:
                pass  # another waiter deleted it first
        return live

    # -- while holding

    def check(self, action: str) -> None:
        """Before each registry call of a move: the lease has more than the margin left, and
        this ticket is still the lowest live one. Otherwise nothing more moves."""
        if self.ticket is None or self.lost is not None or time.monotonic() >= self.deadline:
            raise TrackingError(
                f"the lock on {self.name}'s aliases ran out before {action}"
                + (f" ({self.lost})" if self.lost else "")
                + "; nothing more was moved",
                fix="re-run (it completes what was left half done). The lease is renewed "
                "while the process runs, so this follows a process stopped or starved of CPU "
                "for longer than tracking.lock_lease, or an MLflow server that did not answer "
                "the renewals: check the machine's load and the server, or raise "
                "tracking.lock_lease",
            )
        with errors(f"checking the lock before {action}"):
            live = self._live_tickets()
        if time.monotonic() >= self.deadline:
            # The search itself took long (a server slow or coming back): the write that
            # follows might land after the lease. Nothing more moves.
            raise TrackingError(
                f"the lock on {self.name}'s aliases ran out before {action} (the registry took "
                "too long to answer); nothing more was moved",
                fix="re-run once the MLflow server answers promptly (it completes what was left "
                "half done); if this repeats, raise tracking.lock_lease",
            )
        if not live or live[0].version != self.ticket:
            other = next((t for t in live if t.version != self.ticket), None)
            raise TrackingError(
                f"the lock on {self.name}'s aliases was lost before {action}"
                + (f" (held by {other.describe()})" if other else "")
                + "; nothing more was moved",
                fix="re-run; if this repeats, check the clocks of the machines that run mlgate "
                "and raise tracking.lock_lease",
            )

    def fault(self, point: str) -> None:
        """Fault injection for tests (tracking.fault_point): die here as a killed job does
        (`POINT`), or stop until SIGCONT (`stop:POINT`, to take the database away mid-move), or
        wait alive until a file exists (`pause:POINT:PATH`); see mlgate.faults."""
        faults.reach(point, self.fault_point)


def check_marker(lock: str, name: str, tags: Mapping[str, str]) -> None:
    refuse_prompt(lock, tags)
    if tags.get(MARKER) != MARKER_VALUE:
        raise ConfigError(
            f"a registered model named '{lock}' exists, but mlgate did not create it (it lacks "
            f"the tag {MARKER}={MARKER_VALUE}): mlgate keeps the lock on {name}'s aliases under "
            "that name and will not use or delete another model",
            fix=f"rename the registered model '{lock}' (or choose another model.name); "
            "mlgate then creates its lock there",
        )


def pointer_lock(
    client: Client, settings: Settings, action: str, *, name: str | None = None
) -> PointerLock:
    """The lock on the pointers of `name` (default `settings.model.name`; Production moves
    lock `settings.model.production_model`), named after who takes it for what."""
    point = settings.tracking.fault_point
    if point is not None and faults.parse(point) is None:
        raise ConfigError(
            f"tracking.fault_point '{point}' is not a fault point",
            fix="use one of: " + ", ".join(ALL_FAULT_POINTS + faults.TRAIN_POINTS),
        )
    t = settings.tracking  # its lease fits its requests: checked when settings load
    g = settings.github
    who = f"{action} by {g.run_url or f'{socket.gethostname()} pid {os.getpid()}'}"
    return PointerLock(
        client,
        name or settings.model.name,
        holder=who,
        wait=t.lock_wait,
        lease=t.lock_lease,
        fault_point=point,
        denied=denied_fix(name) if name and name != settings.model.name else None,
        call_budget=t.request_budget,
    )


# --- the move -------------------------------------------------------------------------------


def move_alias(
    client: Client,
    name: str,
    alias: str,
    version: str,
    *,
    lock: PointerLock,
    tags: Mapping[str, str],
    previous: str | None = None,
    previous_tags: Mapping[str, str] | None = None,
) -> None:
    """The one place registry pointers move, under `lock`: the pending record on `version`,
    then `alias` (the commit point), then `converge` does the rest (stage, archive, tags of both
    versions, history) and removes the pending record once all of it agrees."""
    pending = json.dumps(
        {
            "tags": dict(tags),
            "previous": previous,
            "previous_tags": dict(previous_tags or {}),
            "at": datetime.now(UTC).isoformat(timespec="microseconds"),
        }
    )
    with errors(f"moving '{alias}' of {name} to version {version}"):
        lock.check(f"recording the move of '{alias}' to version {version}")
        client.set_model_version_tag(name, version, PENDING + alias, pending)
        lock.fault("move.after_pending")
        lock.check(f"moving '{alias}' to version {version}")
        client.set_registered_model_alias(name, alias, version)
        lock.fault("move.after_alias")
    converge(client, name, lock=lock)


# -- the state, as plain data, and what disagrees in it


@dataclass(frozen=True)
class VersionState:
    version: str
    stage: str
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelState:
    name: str
    aliases: Mapping[str, str]  # alias -> version
    tags: Mapping[str, str]  # of the registered model (history events)
    versions: Mapping[str, VersionState]
    tickets: tuple[Ticket, ...] = ()
    now: float = 0.0


@dataclass(frozen=True)
class Finding:
    """One disagreement, in plain words, and the registry call that repairs it."""

    kind: str  # stage | archive | tag | previous_tag | history | clear | drop | ticket
    message: str
    action: tuple[str, ...]  # (call, arguments...); () when nothing is to be done


def history_key(alias: str, at: str, version: str) -> str:
    return f"{HISTORY}{alias}.{datetime.fromisoformat(at):%Y%m%dT%H%M%S.%f}Z.v{version}"


def history_event(alias: str, version: str, move: Mapping[str, Any]) -> str:
    event = {
        "alias": alias,
        "version": version,
        "previous": move["previous"],
        "at": move["at"],
        "tags": {k: v[:1000] for k, v in move["tags"].items() if k in HISTORY_TAGS},
    }
    return json.dumps(event, sort_keys=True)


def desired_stage(state: ModelState, version: str) -> str | None:
    """The stage that agrees with the aliases: Production for the production holder, Staging
    for the staging holder (unless it is in Production too), Archived for any other version in
    an active stage; None: leave the stage alone."""
    holds = {alias for alias, v in state.aliases.items() if v == version}
    for alias in ("production", "staging"):
        if alias in holds:
            return STAGE_OF[alias]
    if state.versions[version].stage in ACTIVE_STAGES:
        return "Archived"
    return None


def inspect(state: ModelState) -> list[Finding]:
    """Every disagreement between aliases, stages, tags, history and pending records, in the
    order their repairs must run: stages, then the records of completed moves, then the
    pending records (cleared last, only once everything else agrees)."""
    stages: list[Finding] = []
    records: list[Finding] = []
    clears: list[Finding] = []
    name = state.name
    for alias, version in sorted(state.aliases.items()):
        if alias in STAGE_OF and version not in state.versions:
            stages.append(
                Finding("alias", f"'{alias}' points at version {version}, which is gone", ())
            )
    for version in sorted(state.versions, key=int):
        want, have = desired_stage(state, version), state.versions[version].stage
        if want is not None and want != have:
            if want == "Archived":
                stages.append(
                    Finding(
                        "archive",
                        f"version {version} is in stage {have} but holds no alias of it: "
                        "archive it",
                        ("stage", version, "Archived"),
                    )
                )
            else:
                alias = "production" if want == "Production" else "staging"
                stages.append(
                    Finding(
                        "stage",
                        f"version {version} holds '{alias}' but its stage is {have}: move it "
                        f"to {want}",
                        ("stage", version, want),
                    )
                )
    stages.sort(key=lambda f: f.kind != "stage")  # the holder first, then the archive
    for version in sorted(state.versions, key=int):
        tags = state.versions[version].tags
        for key in sorted(k for k in tags if k.startswith(PENDING)):
            alias = key[len(PENDING) :]
            try:
                move = json.loads(tags[key])
                moved_tags, prev = dict(move["tags"]), move.get("previous")
                prev_tags, at = dict(move.get("previous_tags") or {}), move.get("at")
                if at is not None:
                    datetime.fromisoformat(at)
            except (ValueError, KeyError, TypeError):
                clears.append(
                    Finding(
                        "drop",
                        f"version {version} carries an unreadable pending record of "
                        f"'{alias}': dropped",
                        ("clear", version, alias),
                    )
                )
                continue
            if state.aliases.get(alias) != version:
                holder = state.aliases.get(alias)
                clears.append(
                    Finding(
                        "drop",
                        f"a move of '{alias}' to version {version} was begun but its alias "
                        f"never moved ('{alias}' is on {f'version {holder}' if holder else 'no version'}): "
                        "its pending record is dropped and a re-run moves it again",
                        ("clear", version, alias),
                    )
                )
                continue
            for k, v in sorted(moved_tags.items()):
                if tags.get(k) != v:
                    records.append(
                        Finding(
                            "tag",
                            f"version {version} holds '{alias}' but lacks the move's tag {k}",
                            ("tag", version, k, v),
                        )
                    )
            if prev and prev in state.versions:
                for k, v in sorted(prev_tags.items()):
                    if state.versions[prev].tags.get(k) != v:
                        records.append(
                            Finding(
                                "previous_tag",
                                f"version {prev}, replaced as '{alias}' by {version}, lacks "
                                f"the tag {k}",
                                ("tag", prev, k, v),
                            )
                        )
            if at is not None:
                hkey = history_key(alias, at, version)
                if hkey not in state.tags:
                    records.append(
                        Finding(
                            "history",
                            f"{name}'s history lacks the move of '{alias}' to version {version}",
                            ("model_tag", hkey, history_event(alias, version, move)),
                        )
                    )
            clears.append(
                Finding(
                    "clear",
                    f"version {version} holds '{alias}' but its move is still pending: finish it",
                    ("clear", version, alias),
                )
            )
    tickets = []
    for ticket in state.tickets:
        if ticket.live(state.now):
            tickets.append(
                Finding(
                    "ticket",
                    f"the lock is held by {ticket.describe()}: if that job is dead, its lease "
                    "frees the lock and the next move (or doctor --repair) completes its work",
                    (),
                )
            )
        else:
            tickets.append(
                Finding(
                    "ticket",
                    f"an expired lock ticket of {ticket.holder} (ticket {ticket.version}) is "
                    "left: deleted by the next move",
                    ("ticket", str(ticket.version)),
                )
            )
    return stages + records + clears + tickets


def read_state(client: Client, name: str, *, with_tickets: bool = False) -> ModelState:
    from mlflow.exceptions import MlflowException

    with errors(f"reading the pointers of {name}"):
        try:
            model = client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise ConfigError(
                f"the registered model '{name}' does not exist in this registry, so it has no "
                "versions, aliases or stages to move (nothing was moved or recorded)",
                fix="check model.name and the tracking URI; if the registry was reset (its "
                "database emptied or replaced), train and deploy again: what it held is gone",
            ) from None
        versions = {
            str(v.version): VersionState(str(v.version), v.current_stage or "None", dict(v.tags))
            for v in search_versions(client, name)
        }
        tickets: tuple[Ticket, ...] = ()
        if with_tickets:
            try:
                lock = client.get_registered_model(lock_name(name))
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
            else:
                check_marker(lock.name, name, lock.tags)
                tickets = tuple(
                    tickets_of(
                        v
                        for v in search_versions(client, lock.name)
                        if (v.tags or {}).get(MARKER) == MARKER_VALUE
                    )
                )
    refuse_prompt(name, model.tags)
    aliases = {alias: str(v) for alias, v in (model.aliases or {}).items()}
    return ModelState(name, aliases, dict(model.tags), versions, tickets, time.time())


FAULT_OF = {
    "stage": "finish.after_stage",
    "archive": "finish.after_archive",
    "tag": "finish.after_tag",
    "previous_tag": "finish.after_previous_tag",
    "history": "finish.after_history",
    "clear": "finish.after_clear",
    "drop": "finish.after_drop",
}


def apply(client: Client, name: str, finding: Finding, lock: PointerLock | None) -> None:
    import warnings

    if not finding.action:
        return
    if lock is not None:
        lock.check(finding.message)
    call, *args = finding.action
    # Only `converge` applies findings, on the state it has just read (`read_state`, which
    # refuses a prompt): each repair is the write alone (tracking.writes).
    client = writes(client)
    if call == "stage":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated upstream
            client.transition_model_version_stage(
                name, args[0], args[1], archive_existing_versions=False
            )
    elif call == "tag":
        client.set_model_version_tag(name, args[0], args[1], args[2])
    elif call == "model_tag":
        client.set_registered_model_tag(name, args[0], args[1])
    elif call == "clear":
        client.delete_model_version_tag(name, args[0], PENDING + args[1])
    elif call == "ticket":
        client.delete_model_version(lock_name(name), args[0])
    if lock is not None and finding.kind in FAULT_OF:
        lock.fault(FAULT_OF[finding.kind])


def converge(client: Client, name: str, *, lock: PointerLock | None) -> list[Finding]:
    """Bring `name`'s stages, tags and history into agreement with its aliases and pending
    records, then remove the pending records: what a re-run does after a crash at any point of a
    move, and what `mlgate doctor --repair` does. The findings repaired are returned."""
    return converged(client, name, lock=lock)[0]


def converged(
    client: Client, name: str, *, lock: PointerLock | None
) -> tuple[list[Finding], ModelState]:
    """`converge`, and the state it last read: the aliases, stages and tags as they agree
    now (a pending record it cleared may still show in the tags), for a caller under the same
    lock to read instead of asking the registry again."""
    with errors(f"completing the pointer moves of {name}"):
        done = []
        state = read_state(client, name)
        findings = [f for f in inspect(state) if f.kind != "ticket"]
        for finding in findings:
            if finding.action and finding.kind not in {"clear", "drop"}:
                apply(client, name, finding, lock)
                done.append(finding)
        # Trust nothing written without reading it back: the pending records go only when
        # aliases, stages, tags and history all agree. When nothing was written, the state
        # just read is what a second read would return under the lock, so it is used as is.
        if done or lock is None:
            state = read_state(client, name)
            left = [f for f in inspect(state) if f.kind != "ticket"]
        else:
            left = findings
        wrong = [f for f in left if f.action and f.kind not in {"clear", "drop"}]
        if wrong:
            raise TrackingError(
                f"{name}'s pointers still disagree after the repair: {wrong[0].message}",
                fix="check the MLflow server (a failing backend store?), then re-run or run "
                "`mlgate doctor`",
            )
        for finding in left:
            if finding.action:
                apply(client, name, finding, lock)
                done.append(finding)
    return done, state


REFUSED = "refused"  # mlgate.history.refused.STAMP.vN: a move refused under the lock


def record_refusal(
    client: Client,
    model: str,
    version: str,
    *,
    command: str,
    reasons: str,
    lock: PointerLock,
    original: str | None = None,
) -> None:
    """A deploy or rollback refused under the lock (another move landed first: its decision
    is stale, or Production is not what its operator saw) leaves one event in `model`'s
    history, as a refused promotion does, so the audit says what happened to both racers:
    `{"alias": null, "outcome": "refused", "version": N, "tags": {command, reason}}`.
    `original`: "NAME/VERSION" when `model` is the production model (`mlgate.copy.of`, how
    `mlgate lineage` maps it to model.name's numbers). Nothing else is written; a failure to
    write it is said and never hides the refusal (the caller raises its own error)."""
    at = datetime.now(UTC)
    tags = {"mlgate.refused.command": command, "mlgate.refused.reason": reasons[:1000]}
    if original is not None:
        tags[COPY_OF] = original
    event = {
        "alias": None,
        "outcome": REFUSED,
        "version": str(version),
        "previous": None,
        "at": at.isoformat(timespec="microseconds"),
        "tags": tags,
    }
    key = f"{HISTORY}{REFUSED}.{at:%Y%m%dT%H%M%S.%f}Z.v{version}"
    try:
        lock.check(f"recording the refused {command} of version {version}")
        with errors(f"recording the refused {command} of version {version} in {model}"):
            client.set_registered_model_tag(model, key, json.dumps(event, sort_keys=True))
    except MlgateError as exc:
        print(f"warning: the refusal is not in {model}'s history: {exc}", file=sys.stderr)


def completed(findings: Iterable[Finding], alias: str) -> list[str]:
    """Versions whose pending move of `alias` `converge` finished (not dropped)."""
    return [f.action[1] for f in findings if f.kind == "clear" and f.action[2] == alias]


# -- Look-ups shared by the stages that only move pointers (promote, deploy, rollback,
# lineage), kept apart from mlgate.pipeline.evaluate so that moving one alias imports no training library.

CHAMPION_ALIASES = ("production", "staging")


def find_champion(
    client: Client, name: str, candidate_version: str, production_model: str | None = None
) -> ModelRef | None:
    """The version in Production (`production_of`: on `production_model` when it is set),
    else the one holding `staging`; the candidate itself never counts."""
    for alias in CHAMPION_ALIASES:
        if alias == PRODUCTION:
            held = production_of(client, name, production_model or name)
            version = None if held is None else held.source
        else:
            version = version_by_alias(client, name, alias)
        if version is not None and str(version.version) != str(candidate_version):
            return ModelRef(name, str(version.version), version.run_id, alias)
        if alias == PRODUCTION and version is None:
            lost = lost_production(client, name, production_model or name)
            if lost is not None:
                raise ProductionLost(
                    f"{lost}. Judging a candidate against "
                    + (
                        "the version holding 'staging'"
                        if version_by_alias(client, name, "staging") is not None
                        else "no champion"
                    )
                    + " instead would not compare it with what served, so nothing was judged",
                    fix=LOST_FIX,
                )
    return None


LOST_FIX = (
    "put a version back in Production deliberately, behind the Environment's approval: "
    "`mlgate deploy --candidate-version N --set deploy.require_staging=false` (N: the version "
    "to serve; `mlgate lineage` lists what was deployed). Until then evaluate, promote, the "
    "gated deploy and rollback refuse, and `mlgate doctor` reports it"
)


def lost_production(client: Client, name: str, production_model: str) -> str | None:
    """Why no version holds `production` although the registry's history says one did (what
    a deleted version leaves: MLflow deletes its aliases with it), or None when Production
    never held a version (a new model, or a registry reset: the history went with the model).
    Called only when `production_of` found no holder. Never "no champion" for a lost one."""
    from mlflow.exceptions import MlflowException

    for model in dict.fromkeys((production_model, name)):
        with errors(f"reading the history of {model}"):
            try:
                tags = dict(client.get_registered_model(model).tags or {})
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                continue
        events = sorted(k for k in tags if k.startswith(f"{HISTORY}{PRODUCTION}."))
        if not events:
            continue
        try:  # the newest move (the keys carry a fixed-width UTC stamp)
            event = json.loads(tags[events[-1]])
            version, at = str(event["version"]), str(event.get("at", "?"))
            original = (event.get("tags") or {}).get(COPY_OF)
        except (ValueError, KeyError, TypeError, AttributeError):
            version = events[-1].rpartition(".v")[2]
            at, original = "?", None
        with errors(f"reading {model} version {version}"):
            try:
                client.get_model_version(model, version)
                gone = False
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                gone = True
        what = f"{model} version {version}" + (f" (the copy of {original})" if original else "")
        return (
            f"no version holds '{PRODUCTION}', but {what}, which held '{PRODUCTION}' since {at} "
            f"({model}'s history), "
            + (
                "was deleted (MLflow deletes a version's aliases with it)"
                if gone
                else "lost the alias (removed by hand)"
            )
        )
    return None


def get_version(client: Client, name: str, version: str) -> Any:  # a ModelVersion
    """A registered version; one that does not exist is the caller's mistake, not MLflow's."""
    from mlflow.exceptions import MlflowException

    with errors(f"reading {name} version {version}"):
        try:
            return client.get_model_version(name, version)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
    raise ConfigError(
        f"model '{name}' has no version {version}",
        fix="pass --candidate-version with a registered version (the train step's "
        "model-version output), and the same model.name",
    )


def replaced_since(client: Client, name: str, seen: Any) -> str | None:
    """Why `name` version `seen.version` is no longer the version `seen` (read earlier), or
    None when it still is. A registry reset (the model deleted and re-created, or a new store)
    numbers versions from 1 again, so version N can be another model by the time a long step
    (an image build) ends: the same number, another run or registration time."""
    from mlflow.exceptions import MlflowException

    version = str(seen.version)
    with errors(f"reading {name} version {version}"):
        try:
            now = client.get_model_version(name, version)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return f"{name} version {version} was deleted (or the model with it)"
    if (now.run_id, now.creation_timestamp) != (seen.run_id, seen.creation_timestamp):
        return (
            f"{name} version {version} is another version now (run {now.run_id}, registered "
            f"at {now.creation_timestamp}; it was run {seen.run_id}, at "
            f"{seen.creation_timestamp}): the model was deleted and re-created"
        )
    return None


# --- Production: a registered model of its own (docs/production-registry.md) ----------------
#
# With model.production_name set, `production` (alias and stage) lives on that registered
# model, which only the Environment's credentials may write: the approved version of
# model.name is copied there (`copy_model_version`) by the gated deploy, and the copy is what
# the alias points at. Every reader of Production goes through `production_of`, which also
# reads the layout of earlier releases (`production` on model.name itself).

PRODUCTION = "production"
COPY_OF = "mlgate.copy.of"  # on a copy: "NAME/VERSION" of its original
COPY_SHA256 = "mlgate.copy.sha256"  # on a copy: the original's logged booster sha256, checked
PRODUCTION_OF = "mlgate.production.of"  # on the production registered model: model.name
# copy_model_version copies every tag of the original; these describe the original's own past
# pointer moves and images (the layout of earlier releases), not the copy's: a fresh copy
# drops them before it is marked as a copy.
NOT_COPIED = ("mlgate.pending.", "mlgate.production.", "mlgate.rollback.", "mlgate.image.")
COPY_SOURCE = re.compile(r"models:/([A-Za-z0-9][A-Za-z0-9._-]{0,99})/([0-9]+)")


@dataclass(frozen=True)
class Production:
    """What is in Production. `source` is model.name's version (its lineage, run, decision);
    `holder` the version holding `production`: its copy in the production model, or `source`
    itself in the layout of earlier releases (`legacy`)."""

    source: Any  # ModelVersion of model.name
    holder: Any  # ModelVersion holding `production`

    @property
    def version(self) -> str:
        return str(self.source.version)

    @property
    def legacy(self) -> bool:
        return bool(self.holder.name == self.source.name)

    @property
    def tags(self) -> dict[str, str]:
        """The original's lineage tags with the holder's record of its moves (approval, image,
        rollback) over them: what the readers show."""
        if self.legacy:
            return dict(self.source.tags)
        own = {k: v for k, v in self.source.tags.items() if not k.startswith(NOT_COPIED)}
        return {**own, **dict(self.holder.tags)}


def original_of(client: Client, name: str, copy: Any) -> Any:  # -> ModelVersion of `name`
    """The version of `name` that `copy` (a version of the production model) copies, read from
    the copy's `source` (`models:/NAME/VERSION`, set by copy_model_version) and checked
    against its run and its `mlgate.copy.of` tag: a copy that names another model or
    disagrees is refused, never followed."""
    match = COPY_SOURCE.fullmatch(copy.source or "")
    claimed = (copy.tags or {}).get(COPY_OF)
    if (
        match is None
        or match.group(1) != name
        or (claimed is not None and claimed != f"{name}/{match.group(2)}")
    ):
        raise TrackingError(
            f"{copy.name} version {copy.version} holds '{PRODUCTION}' but is not a copy of a "
            f"version of {name} (source {str(copy.source)[:200]!r}, {COPY_OF}={claimed!r})",
            fix=f"point '{PRODUCTION}' of {copy.name} at a copy made by `mlgate deploy` "
            "(`mlgate rollback --to N` makes one), or check model.production_name",
        )
    try:
        original = get_version(client, name, match.group(2))
    except ConfigError:
        raise ProductionLost(
            f"{copy.name} version {copy.version} holds '{PRODUCTION}' as the copy of {name} "
            f"version {match.group(2)}, which was deleted: its lineage, run and decision are "
            "gone, so what is in Production cannot be read",
            fix=f"remove the alias with the Environment's credential (MlflowClient()."
            f"delete_registered_model_alias('{copy.name}', '{PRODUCTION}')), then {LOST_FIX}",
        ) from None
    if original.run_id != copy.run_id:
        raise TrackingError(
            f"{copy.name} version {copy.version} names {name} version {original.version} as "
            f"its source, but their runs differ ({copy.run_id} / {original.run_id})",
            fix=f"redeploy {name} version {original.version} (a fresh copy is made)",
        )
    return original


def production_of(client: Client, name: str, production_model: str) -> Production | None:
    """THE reader of Production, for every stage: the version of `name` in Production, with the
    version holding the alias. `production` on `production_model` first; when that model has
    none (or is `name` itself), the layout of earlier releases: `production` on `name`."""
    if production_model != name:
        holder = version_by_alias(client, production_model, PRODUCTION)
        if holder is not None:
            return Production(original_of(client, name, holder), holder)
        if _production_history(client, production_model):
            # Production lived here and its holder is gone: never fall back to a stale alias
            # of the earlier layout (`lost_production` says what was lost).
            return None
    legacy = version_by_alias(client, name, PRODUCTION)
    return None if legacy is None else Production(legacy, legacy)


def _production_history(client: Client, model: str) -> bool:
    """Whether `model`'s history records a move of `production` (a missing model: no)."""
    from mlflow.exceptions import MlflowException

    with errors(f"reading the history of {model}"):
        try:
            tags = client.get_registered_model(model).tags or {}
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return False
    return any(key.startswith(f"{HISTORY}{PRODUCTION}.") for key in tags)


def production(client: Client, settings: Settings) -> Production | None:
    return production_of(client, settings.model.name, settings.model.production_model)


def find_copy(client: Client, production_model: str, name: str, version: str) -> Any | None:
    """The copy of `name` version `version` in `production_model` (found by its source, which
    copy_model_version writes in the same call that creates it), the oldest if several."""
    source = f"models:/{name}/{version}"
    found = [v for v in search_versions(client, production_model) if v.source == source]
    return min(found, key=lambda v: int(v.version)) if found else None


def ensure_production_model(
    client: Client, name: str, production_model: str, lock: PointerLock
) -> None:
    """The production registered model, created if missing, and marked as `name`'s (a model
    of that name marked for another is refused). Writing the mark is also the check that this
    credential may write the production model, before anything else is done."""
    from mlflow.exceptions import MlflowException

    action = f"writing the production model '{production_model}'"
    with errors(action, denied=denied_fix(production_model)):
        try:
            model = client.get_registered_model(production_model)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            lock.check(action)
            client.create_registered_model(
                production_model,
                tags={PRODUCTION_OF: name},
                description=f"Production of {name}: copies of its approved versions, moved "
                "only by the gated deploy and rollback (mlgate). Write access: the "
                "Environment's credentials only.",
            )
            return
        marked = (model.tags or {}).get(PRODUCTION_OF)
        if marked not in (None, name):
            raise ConfigError(
                f"the registered model '{production_model}' is the production model of "
                f"'{marked}', not of '{name}'",
                fix="set model.production_name to a name of this model's own",
            )
        lock.check(action)
        client.set_registered_model_tag(production_model, PRODUCTION_OF, name)


def denied_fix(production_model: str) -> str:
    return (
        f"Production moves need the Environment's MLflow credential, with MANAGE on the "
        f"registered models '{production_model}' and '{LOCK_PREFIX}{production_model}' "
        "(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in the deploy job, from the "
        "Environment secret MLFLOW_PRODUCTION_TRACKING_PASSWORD): see "
        "docs/production-registry.md. The pipeline's credential is refused by design"
    )


def ensure_copy(
    client: Client, name: str, version: str, sha256: str, production_model: str, lock: PointerLock
) -> Any:  # the ModelVersion copy
    """The copy of `name` version `version` in `production_model`, made once: a re-run (after a
    SIGKILL anywhere in here) finds it by its source and never makes a second one. It is
    trusted only once its logged booster has `sha256` (the original's, from the artifact
    store). Returns the copy (a ModelVersion)."""
    from mlgate.registry.logged import logged_booster

    action = f"copying {name} version {version} into {production_model}"
    with errors(action, denied=denied_fix(production_model)):
        copy = find_copy(client, production_model, name, version)
        if copy is None:
            lock.check(action)
            copy = client.copy_model_version(f"models:/{name}/{version}", production_model)
            lock.fault("copy.after_copy")
        tags = dict(copy.tags or {})
        if COPY_OF not in tags:  # a fresh copy: drop what it inherited of the original's past
            for key in sorted(k for k in tags if k.startswith(NOT_COPIED)):
                lock.check(action)
                client.delete_model_version_tag(production_model, copy.version, key)
                lock.fault("copy.after_strip")
    held = logged_booster(client, production_model, str(copy.version)).sha256
    if held != sha256 or tags.get(COPY_SHA256, sha256) != sha256:
        raise TrackingError(
            f"{production_model} version {copy.version}, the copy of {name} version {version}, "
            f"does not hold its model (sha256 {held[:12]}, recorded "
            f"{tags.get(COPY_SHA256, '-')[:12]}, the original's {sha256[:12]})",
            fix=f"delete {production_model} version {copy.version} (someone rewrote it or its "
            "artifacts) and re-run: a fresh copy is made",
        )
    with errors(action, denied=denied_fix(production_model)):
        if COPY_OF not in tags:
            lock.check(action)
            client.set_model_version_tag(production_model, copy.version, COPY_SHA256, sha256)
            client.set_model_version_tag(
                production_model, copy.version, COPY_OF, f"{name}/{version}"
            )
            lock.fault("copy.after_tag")
        return client.get_model_version(production_model, copy.version)

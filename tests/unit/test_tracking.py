"""registry.tracking's decisions without a server: which failure becomes which mlgate error
(and exit code), and the sqlite store whose folder is missing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import (
    PERMISSION_DENIED,
    RESOURCE_DOES_NOT_EXIST,
    UNAUTHENTICATED,
)

from mlgate.errors import ConfigError, PermissionDenied, TrackingError
from mlgate.registry import tracking


@pytest.mark.parametrize("code", [PERMISSION_DENIED, UNAUTHENTICATED])
def test_a_refused_credential_is_permission_denied(code: int) -> None:
    with pytest.raises(PermissionDenied) as caught:
        with tracking.errors("moving the alias", denied="use the deployer's credential"):
            raise MlflowException("no\nsecond line", error_code=code)
    assert caught.value.exit_code == 13
    assert caught.value.message.startswith("MLflow refused moving the alias to this credential")
    assert caught.value.message.endswith(": no")  # the first line only
    assert caught.value.fix == "use the deployer's credential"


def test_a_refusal_wrapped_in_another_error_is_still_denied() -> None:
    """copy_model_version wraps the server's 403 in an error of its own."""
    with pytest.raises(PermissionDenied):
        with tracking.errors("copying"):
            try:
                raise RestException({"error_code": "PERMISSION_DENIED", "message": "no"})
            except RestException as inner:
                raise MlflowException("copy failed") from inner


def test_any_other_mlflow_failure_is_a_tracking_error() -> None:
    with pytest.raises(TrackingError) as caught:
        with tracking.errors("reading x"):
            raise MlflowException("gone", error_code=RESOURCE_DOES_NOT_EXIST)
    assert caught.value.exit_code == 5
    assert caught.value.message == "MLflow failed while reading x: gone"
    assert caught.value.fix == tracking.FIX_UNREACHABLE


@pytest.mark.parametrize(
    "exc", [requests.ConnectionError("refused"), ConnectionError(), requests.Timeout("slow")]
)
def test_network_failures_are_tracking_errors(exc: Exception) -> None:
    with pytest.raises(TrackingError) as caught:
        with tracking.errors("listing"):
            raise exc
    assert caught.value.message.startswith("MLflow failed while listing: ")
    assert caught.value.message != "MLflow failed while listing: "  # never an empty reason


def test_other_exceptions_pass_through() -> None:
    with pytest.raises(KeyError):
        with tracking.errors("x"):
            raise KeyError("a bug is not a tracking failure")


def test_a_sqlite_store_in_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        tracking.check_sqlite_folder(f"sqlite:///{tmp_path}/typo/mlflow.db")
    assert caught.value.exit_code == 2
    assert "does not exist" in caught.value.message
    assert not (tmp_path / "typo").exists()  # nothing created


@pytest.mark.parametrize("uri", ["sqlite:///", "sqlite:///:memory:"])
def test_an_in_memory_store_needs_no_folder(uri: str) -> None:
    tracking.check_sqlite_folder(uri)


def test_a_sqlite_store_in_an_existing_folder_is_accepted(tmp_path: Path) -> None:
    tracking.check_sqlite_folder(f"sqlite:///{tmp_path}/mlflow.db")
    assert list(tmp_path.iterdir()) == []  # checked, not created


def test_an_unreachable_server_is_a_tracking_error_naming_the_attempts() -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TrackingError) as caught:
        tracking.wait_until_healthy(f"http://127.0.0.1:{port}", retries=1, backoff=0, timeout=2)
    assert "is unreachable after 2 attempts" in caught.value.message


# Values a public caller may pass, each with the literal it becomes. The oracle of what the
# literal means is MLflow's own filter parser, the code its server runs on `filter_string`.
LITERALS = [
    ("breast-cancer-xgb", "'breast-cancer-xgb'"),
    ("o'brien", '"o\'brien"'),  # a valid MLflow model name
    ('say "hi"', "'say \"hi\"'"),
    ("x' and run_id='y", "\"x' and run_id='y\""),  # would narrow the search if spliced
    ("a''b", "\"a''b\""),  # not unescaped by MLflow: searched as written
    ("back\\slash", "'back\\slash'"),
    ("semi;colon", "'semi;colon'"),
    ("", "''"),
]


@pytest.mark.parametrize(("value", "literal"), LITERALS)
def test_a_filter_value_is_quoted_as_mlflow_reads_it_back(value: str, literal: str) -> None:
    from mlflow.utils.search_utils import SearchModelVersionUtils, SearchUtils

    assert tracking.filter_literal(value) == literal
    versions = SearchModelVersionUtils.parse_search_filter(
        f"name = {literal} and run_id = {tracking.filter_literal('r')}"
    )
    assert [(c["key"], c["value"]) for c in versions] == [("name", value), ("run_id", "r")]
    runs = SearchUtils.parse_search_filter(
        f"attributes.run_name = {literal} and attributes.status = 'RUNNING'"
    )
    assert [(c["key"], c["value"]) for c in runs] == [("run_name", value), ("status", "RUNNING")]


@pytest.mark.parametrize(
    ("value", "why"), [('it\'s "x"', "both a single and a double quote"), ("ends\\", "backslash")]
)
def test_a_value_mlflow_cannot_read_back_is_refused(value: str, why: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.utils.search_utils import SearchModelVersionUtils

    with pytest.raises(ValueError, match=why) as caught:
        tracking.filter_literal(value)
    assert "rename it" in str(caught.value)
    # Why: between either quote (the next clause's value quoted alike), MLflow reads another
    # value or none at all.
    for q in "'\"":
        try:
            read = SearchModelVersionUtils.parse_search_filter(
                f"name = {q}{value}{q} and run_id = {q}r{q}"
            )
        except MlflowException:
            continue
        assert [c["value"] for c in read] != [value, "r"]


def test_a_prompt_is_refused_as_a_model_and_a_model_passes() -> None:
    """MlflowClient refuses to write a prompt's registered model (its check before every
    write); mlgate makes that check once, on the model it read under the lock."""
    from mlflow.prompt.constants import IS_PROMPT_TAG_KEY

    assert tracking.PROMPT_TAG == IS_PROMPT_TAG_KEY  # MLflow's own mark
    with pytest.raises(ConfigError) as caught:
        tracking.refuse_prompt("greeting", {IS_PROMPT_TAG_KEY: "true", "x": "1"})
    assert "'greeting' is an MLflow prompt" in caught.value.message and caught.value.fix
    tracking.refuse_prompt("model", {"mlgate.lock": "ticket-lock/1"})
    tracking.refuse_prompt("model", {})


def test_the_writes_of_a_move_go_to_mlflows_registry_client_with_the_same_calls() -> None:
    """`tracking.writes` is the registry client MlflowClient delegates to, and it takes every
    write a move makes with the arguments mlgate passes (an MLflow upgrade that moves them
    fails here, not in a move)."""
    import inspect

    import mlflow
    from mlflow.tracking._model_registry.client import ModelRegistryClient

    writer = tracking.writes(mlflow.MlflowClient("http://127.0.0.1:9"))  # never contacted
    assert isinstance(writer, ModelRegistryClient)
    for method, args in {
        "set_model_version_tag": ("m", "1", "k", "v"),
        "set_registered_model_tag": ("m", "k", "v"),
        "delete_model_version_tag": ("m", "1", "k"),
        "delete_model_version": ("m", "1"),
    }.items():
        inspect.signature(getattr(writer, method)).bind(*args)
    inspect.signature(writer.transition_model_version_stage).bind(
        "m", "1", "Archived", archive_existing_versions=False
    )


def test_the_public_registry_uri_is_the_one_the_client_resolved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """registry/logged.py passes the public `mlflow.get_registry_uri()` where it once read the
    client's private `_registry_uri`: after `set_tracking_uri(client.tracking_uri)`, the two
    are the same for a client made as `tracking.connect` makes it (no registry URI of its own),
    with and without MLFLOW_REGISTRY_URI. The private attribute is the oracle here only."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # restored after the test
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    try:
        for uri in ("http://127.0.0.1:9", "https://mlflow.invalid:5000/prefix"):  # never contacted
            for registry in (None, "http://127.0.0.1:8"):
                if registry:
                    monkeypatch.setenv("MLFLOW_REGISTRY_URI", registry)
                mlflow.set_tracking_uri(uri)
                client = mlflow.MlflowClient()
                mlflow.set_tracking_uri(client.tracking_uri)  # as logged_booster does
                assert mlflow.get_registry_uri() == client._registry_uri == (registry or uri)
                monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    finally:  # no global URI: MLflow reads MLFLOW_TRACKING_URI again, as monkeypatch restores it
        mlflow.set_tracking_uri(None)


# --- one MLflow request's bound, and the lock margin that covers it ------------------------


class Unavailable:
    """A stand-in MLflow server on loopback that answers every request 503 with
    `Retry-After: 3600` (an overloaded server or proxy), counting what it receives."""

    def __init__(self) -> None:
        import http.server
        import threading

        outer = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                outer.requests += 1
                self.send_response(503)
                self.send_header("Retry-After", "3600")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.mark.parametrize(
    "overrides", [{}, {"MLGATE_TRACKING_RETRIES": "2", "MLGATE_TRACKING_BACKOFF": "3"}]
)
def test_one_mlflow_request_is_bounded_by_the_budget_the_lock_margin_covers(
    overrides, monkeypatch, tmp_path
) -> None:
    """The oracle is MLflow's own client (its urllib3 retry object) on a server that answers
    503 with Retry-After: 3600: the attempts it makes and the sleeps it asks for (recorded,
    not slept), every attempt counted at its full timeout. Honouring Retry-After would sleep an
    hour per retry, holding a lock far past its lease."""
    import time

    import mlflow
    import urllib3.util.retry

    from mlgate.registry import moves
    from mlgate.settings import load_settings

    settings = load_settings(env=overrides, cwd=tmp_path)
    t = settings.tracking
    for key, value in t.mlflow_env().items():  # what tracking.connect sets
        monkeypatch.setenv(key, value)
    sleeps: list[float] = []

    class Clock:  # urllib3's `time`, its sleeps recorded instead of slept
        def __getattr__(self, name: str) -> object:
            return getattr(time, name)

        def sleep(self, seconds: float) -> None:
            sleeps.append(seconds)

    monkeypatch.setattr(urllib3.util.retry, "time", Clock())
    server = Unavailable()
    try:
        with pytest.raises(MlflowException):
            mlflow.MlflowClient(server.uri).get_registered_model("m")
    finally:
        server.server.shutdown()
    assert server.requests == t.retries + 1
    assert max(sleeps, default=0) < 600, "Retry-After obeyed: one request without a bound"
    worst = server.requests * t.timeout + sum(sleeps)
    assert worst <= t.request_budget
    lock = moves.pointer_lock(None, settings, "a move")
    assert lock.margin >= t.request_budget  # a write started before the deadline lands in time


def test_a_lease_too_short_for_one_request_is_refused_with_its_fix(tmp_path) -> None:
    from mlgate.registry import moves
    from mlgate.settings import load_settings

    env = {"MLGATE_TRACKING_LOCK_LEASE": "60"}  # the default bounds: up to 68 s a request
    with pytest.raises(ConfigError) as caught:
        load_settings(env=env, cwd=tmp_path)
    assert "tracking.lock_lease (60 s) is too short for one MLflow request" in str(caught.value)
    assert "raise tracking.lock_lease above 91 s" in caught.value.fix
    fits = {"MLGATE_TRACKING_LOCK_LEASE": "60", "MLGATE_TRACKING_TIMEOUT": "5"}
    lock = moves.pointer_lock(None, load_settings(env=fits, cwd=tmp_path), "a move")
    assert lock.margin == 43.0  # 5 attempts of 5 s, sleeps of 0, 2, 4 and 8 s, jitter 4 x 1 s

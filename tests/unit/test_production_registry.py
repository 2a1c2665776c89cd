"""Production in a registered model of its own (docs/production-registry.md), without a server:
the setting, the one reader (`registry.production_of`) on a real MLflow sqlite store, and which
workflows get the Environment's credential."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from mlgate.errors import ConfigError, TrackingError
from mlgate.registry import moves as registry
from mlgate.settings import load_settings
from tests.conftest import REPO


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("mlgate-model", "is model.name"),
        ("bad name", "not a safe registered-model name"),
        ("x" * 101, "not a safe registered-model name"),
        ("mlgate-lock.mlgate-model", "namespace of mlgate's lock models"),
    ],
)
def test_a_bad_production_name_is_refused_with_the_fix(tmp_path: Path, value, words) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(env={"MLGATE_MODEL_PRODUCTION_NAME": value}, cwd=tmp_path)
    assert words in refused.value.message and refused.value.exit_code == 2
    assert "mlgate-model-production" in refused.value.fix


def test_the_production_model_defaults_to_the_model_itself(tmp_path: Path) -> None:
    assert load_settings(env={}, cwd=tmp_path).model.production_model == "mlgate-model"
    s = load_settings(env={"MLGATE_MODEL_PRODUCTION_NAME": "m-prod"}, cwd=tmp_path)
    assert (s.model.production_model, s.model.name) == ("m-prod", "mlgate-model")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> mlflow.MlflowClient:
    """One sqlite store for the module (creating one takes seconds)."""
    return mlflow.MlflowClient(f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db")


@pytest.fixture
def client(store: mlflow.MlflowClient) -> Iterator[mlflow.MlflowClient]:
    """The store, emptied of registered models after each test (names are reused)."""
    yield store
    for model in store.search_registered_models():
        store.delete_registered_model(model.name)


def versions(client: mlflow.MlflowClient, name: str, n: int) -> list[str]:
    client.create_registered_model(name)
    return [
        str(client.create_model_version(name, source=f"file:///nowhere/{i}").version)
        for i in range(n)
    ]


def test_production_is_read_from_its_model_else_from_the_earlier_layout(client) -> None:
    v1, v2 = versions(client, "m", 2)
    assert registry.production_of(client, "m", "m-production") is None
    # The earlier layout: production on the model itself, read as such.
    client.set_registered_model_alias("m", "production", v1)
    found = registry.production_of(client, "m", "m-production")
    assert (found.version, found.legacy) == (v1, True)
    # A copy of v2 in the production model holding production wins over the stale alias.
    copy = client.copy_model_version(f"models:/m/{v2}", "m-production")
    client.set_registered_model_alias("m-production", "production", copy.version)
    found = registry.production_of(client, "m", "m-production")
    assert (found.version, found.legacy, found.holder.name) == (v2, False, "m-production")
    champion = registry.find_champion(client, "m", "99", "m-production")
    assert (champion.version, champion.alias) == (v2, "production")
    # The candidate itself never counts; then staging is the champion.
    client.set_registered_model_alias("m", "staging", v1)
    assert registry.find_champion(client, "m", v2, "m-production").version == v1


def test_a_copy_that_names_another_model_is_refused_not_followed(client) -> None:
    versions(client, "m", 1)
    [other] = versions(client, "other", 1)
    forged = client.copy_model_version(f"models:/other/{other}", "m-production")
    client.set_registered_model_alias("m-production", "production", forged.version)
    with pytest.raises(TrackingError, match="is not a copy of a version of m"):
        registry.production_of(client, "m", "m-production")
    # A tag claiming another original than the source is refused too.
    honest = client.copy_model_version("models:/m/1", "m-production")
    client.set_model_version_tag("m-production", honest.version, registry.COPY_OF, "m/7")
    client.set_registered_model_alias("m-production", "production", honest.version)
    with pytest.raises(TrackingError, match="mlgate.copy.of='m/7'"):
        registry.production_of(client, "m", "m-production")


def test_a_copy_is_found_by_its_source(client) -> None:
    v1, v2 = versions(client, "m", 2)
    assert registry.find_copy(client, "m-production", "m", v1) is None
    first = client.copy_model_version(f"models:/m/{v1}", "m-production")
    client.copy_model_version(f"models:/m/{v2}", "m-production")
    assert registry.find_copy(client, "m-production", "m", v1).version == first.version


def test_only_the_gated_jobs_get_the_environment_credential() -> None:
    """The Environment's MLflow credential reaches deploy.yml and rollback.yml (jobs bound to
    the Environment) and no other workflow: train, evaluate, promote, PR gate, monitor."""
    for path in sorted((REPO / ".github" / "workflows").glob("*.yml")):
        text = path.read_text()
        if path.name in {"deploy.yml", "rollback.yml"}:
            assert re.search(
                r"MLFLOW_TRACKING_PASSWORD: \$\{\{ secrets\.MLFLOW_PRODUCTION_TRACKING_PASSWORD",
                text,
            ), path.name
            assert "environment:\n      name: ${{ inputs.environment }}" in text, path.name
        else:
            assert "MLFLOW_PRODUCTION_" not in text, path.name

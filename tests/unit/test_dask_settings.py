"""train.engine and the dask section, parsed as a table (docs/dask.md)."""

from __future__ import annotations

import pytest

from mlgate.errors import ConfigError
from mlgate.settings import load_settings


def settings(tmp_path, *overrides: str, env: dict[str, str] | None = None):
    return load_settings(env=env or {}, overrides=list(overrides), cwd=tmp_path)


def test_the_default_engine_is_local_and_needs_no_cluster(tmp_path):
    s = settings(tmp_path)
    assert (s.train.engine, s.dask.scheduler, s.dask.connect_timeout) == ("local", None, 10.0)
    assert s.reports.drift_sample_rows == 20000
    assert settings(tmp_path, "reports.drift_sample_rows=500").reports.drift_sample_rows == 500


def test_the_environment_sets_engine_and_scheduler(tmp_path):
    s = settings(
        tmp_path,
        env={"MLGATE_TRAIN_ENGINE": "dask", "MLGATE_DASK_SCHEDULER": "tcp://10.0.0.5:8786"},
    )
    assert (s.train.engine, s.dask.scheduler) == ("dask", "tcp://10.0.0.5:8786")


def test_an_empty_scheduler_variable_is_a_local_cluster(tmp_path):
    s = settings(tmp_path, env={"MLGATE_TRAIN_ENGINE": "dask", "MLGATE_DASK_SCHEDULER": ""})
    assert s.dask.scheduler is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.engine=dsak"], 'did you mean "dask"'),
        (["dask.scheduler=tcp://h:1"], "train.engine is local"),
        (["train.engine=dask", "dask.scheduler=scheduler:8786"], "not a scheduler address"),
        (["train.engine=dask", "dask.scheduler=http://h:8786"], "not a scheduler address"),
        (["train.engine=dask", "dask.tls_ca_file=ca.pem"], "must be set together"),
        (
            [
                "train.engine=dask",
                "dask.scheduler=tls://h:8786",
            ],
            "disagree",
        ),
        (
            [
                "train.engine=dask",
                "dask.scheduler=tcp://h:8786",
                "dask.tls_ca_file=a",
                "dask.tls_cert=b",
                "dask.tls_key=c",
            ],
            "disagree",
        ),
        (["train.engine=dask", "dask.connect_timeout=0"], "must be positive"),
        (["reports.drift_sample_rows=0"], "drift_sample_rows must be at least 1"),
    ],
)
def test_bad_dask_settings_are_refused_with_a_fix(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        settings(tmp_path, *overrides)
    assert info.value.fix and info.value.exit_code == 2


def test_a_tls_scheduler_takes_its_three_files(tmp_path):
    s = settings(
        tmp_path,
        "train.engine=dask",
        "dask.scheduler=tls://h:8786",
        "dask.tls_ca_file=ca.pem",
        "dask.tls_cert=c.pem",
        "dask.tls_key=k.pem",
    )
    assert str(s.dask.tls_key) == "k.pem"

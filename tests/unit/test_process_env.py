"""settings.section_env: the variables that hand a section to a child process (the model
server's workers) read back, through load_settings, as the very same section."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mlgate.errors import ConfigError
from mlgate.settings import MonitorSettings, ServeSettings, load_settings, section_env


@pytest.mark.parametrize(
    ("section", "values"),
    [
        ("serve", ServeSettings()),
        (
            "serve",
            ServeSettings(
                bundle=Path("/model dir/b"),
                host="::1",
                port=9,
                workers=3,
                max_body_bytes=4096,
                max_rows=1,
                allow_missing=True,
                graceful_seconds=0.25,
                compiler="true",  # a string that YAML would read as a boolean
                max_header_bytes=1024,
                read_timeout_seconds=2.5,
            ),
        ),
        ("monitor", MonitorSettings()),
        (
            "monitor",
            MonitorSettings(
                log_sink="s3://bucket/prefix",
                log_endpoint_url="http://127.0.0.1:9",
                log_batch_rows=1,
                log_flush_seconds=0.5,
                drift_method="psi",
                drift_threshold=0.1,
            ),
        ),
    ],
)
def test_section_env_reads_back_as_the_same_section(section, values, tmp_path):
    env = section_env(section, values)
    # every key of the dataclass is named, none hand-listed
    assert len(env) == len(dataclasses.fields(values))
    again = load_settings(env=env, params_file=None, cwd=tmp_path)
    assert getattr(again, section) == values


def test_section_env_refuses_a_none_that_would_read_back_as_a_default():
    bad = dataclasses.replace(ServeSettings(), compiler=None)
    with pytest.raises(ConfigError, match=r"serve\.compiler is None"):
        section_env("serve", bad)

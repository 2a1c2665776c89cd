from __future__ import annotations

from pathlib import Path

import pytest

from mlgate.errors import ConfigError
from mlgate.settings import Settings, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def load(
    tmp_path: Path,
    params: str = "",
    env: dict[str, str] | None = None,
    overrides: tuple[str, ...] = (),
    flags: dict | None = None,
) -> Settings:
    write(tmp_path, params)
    return load_settings(env=env or {}, overrides=overrides, flags=flags, cwd=tmp_path)


def test_defaults_without_a_params_file(tmp_path: Path) -> None:
    settings = load_settings(env={}, cwd=tmp_path)
    assert settings.params_file is None
    assert settings.project_dir == tmp_path.resolve()
    assert settings.split.seed == 42
    assert settings.train.params["objective"] == "binary:logistic"


@pytest.mark.parametrize(
    ("params", "env", "overrides", "flags", "expected"),
    [
        ("split: {seed: 1}", {}, (), None, 1),
        ("split: {seed: 1}", {"MLGATE_SPLIT_SEED": "2"}, (), None, 2),
        ("split: {seed: 1}", {"MLGATE_SPLIT_SEED": "2"}, ("split.seed=3",), None, 3),
        ("split: {seed: 1}", {"MLGATE_SPLIT_SEED": "2"}, ("split.seed=3",), {"split.seed": 4}, 4),
        ("split: {seed: 1}", {"MLGATE_SPLIT_SEED": ""}, (), None, 1),  # empty = unset
        ("split: {seed: 1}", {}, (), {"split.seed": None}, 1),  # flag not given
    ],
    ids=["file", "env-over-file", "set-over-env", "flag-over-set", "empty-env", "absent-flag"],
)
def test_precedence(tmp_path, params, env, overrides, flags, expected) -> None:
    assert load(tmp_path, params, env, overrides, flags).split.seed == expected


def test_mlflow_tracking_uri_is_a_lower_priority_alias(tmp_path: Path) -> None:
    alias = {"MLFLOW_TRACKING_URI": "http://a:5000"}
    assert load(tmp_path, env=alias).tracking.uri == "http://a:5000"
    both = {**alias, "MLGATE_TRACKING_URI": "http://b:5000"}
    assert load(tmp_path, env=both).tracking.uri == "http://b:5000"


def test_mappings_merge_key_by_key(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        "train: {params: {max_depth: 3, eta: 0.1}}",
        env={"MLGATE_TRAIN_PARAMS": "{eta: 0.2}"},
        overrides=("train.params.subsample=0.5",),
    )
    assert settings.train.params["max_depth"] == 3
    assert settings.train.params["eta"] == 0.2
    assert settings.train.params["subsample"] == 0.5
    assert settings.train.params["objective"] == "binary:logistic"  # default kept


def test_strings_are_not_reinterpreted(tmp_path: Path) -> None:
    settings = load(tmp_path, env={"MLGATE_DATA_TARGET": "yes", "MLGATE_MODEL_NAME": "0123"})
    assert settings.data.target == "yes"
    assert settings.model.name == "0123"


def test_relative_paths_resolve_against_the_params_file(tmp_path: Path) -> None:
    settings = load(tmp_path, "schema: {path: s/schema.yaml}\ntracking: {uri: 'sqlite:///m.db'}")
    assert settings.path(settings.schema.path) == tmp_path.resolve() / "s/schema.yaml"
    assert settings.tracking_uri == f"sqlite:///{tmp_path.resolve()}/m.db"


def test_github_context_from_env(tmp_path: Path) -> None:
    env = {
        "GITHUB_OUTPUT": "/o",
        "GITHUB_REPOSITORY": "acme/m",
        "GITHUB_RUN_ID": "7",
        "GITHUB_SHA": "abc",
    }
    gh = load(tmp_path, env=env).github
    assert gh.output_file == Path("/o")
    assert gh.run_url == "https://github.com/acme/m/actions/runs/7"
    assert load(tmp_path).github.run_url is None


@pytest.mark.parametrize(
    ("params", "env", "overrides", "message"),
    [
        ("trian: {}", {}, (), "unknown section 'trian' in params.yaml (did you mean \"train\"?)"),
        (
            "train: {num_boost_rounds: 3}",
            {},
            (),
            "unknown key 'train.num_boost_rounds' in params.yaml (did you mean \"num_boost_round\"?)",
        ),
        (
            "",
            {"MLGATE_SPLIT_SED": "1"},
            (),
            "unknown key 'split.sed' in environment variable MLGATE_SPLIT_SED (did you mean \"seed\"?)",
        ),
        ("", {"MLGATE_TRACKING": "x"}, (), "unknown environment variable MLGATE_TRACKING"),
        ("", {}, ("split.sed=1",), "unknown key 'split.sed' in --set split.sed"),
        ("", {}, ("seed=1",), "is not SECTION.KEY=VALUE"),
        ("", {}, ("split.seed.x=1",), "split.seed is not a mapping"),
        ("split: {seed: abc}", {}, (), "split.seed must be an integer, got 'abc'"),
        (
            "",
            {"MLGATE_SPLIT_SEED": "1.5"},
            (),
            "split.seed must be an integer, got 1.5 (from environment variable MLGATE_SPLIT_SEED)",
        ),
        ("dvc: {pull: maybe}", {}, (), "dvc.pull must be true or false"),
        (
            "split: {holdout_fraction: 1.5}",
            {},
            (),
            "split.holdout_fraction must be between 0 and 1",
        ),
        ("split: {holdout_fraction: 0.5, validation_fraction: 0.45}", {}, (), "under 10% to train"),
        ("metrics: {threshold: 0}", {}, (), "metrics.threshold must be between 0 and 1"),
        ("metrics: {threshold: max_f2}", {}, (), 'nor a rule (did you mean "max_f1"?)'),
        ("metrics: {threshold: 'precision>=1.5'}", {}, (), "target precision must be in (0, 1]"),
        ("metrics: {threshold: true}", {}, (), "metrics.threshold must be a number or a rule"),
        (
            "gate: {max_latency_p95_ms: 10}",
            {},
            (),
            'gate.max_latency_p95_ms in params.yaml was replaced (did you mean "max_latency_ms"?)',
        ),
        (
            "",
            {"MLGATE_GATE_MAX_LATENCY_P95_MS": "10"},
            (),
            "gate.max_latency_p95_ms in environment variable MLGATE_GATE_MAX_LATENCY_P95_MS was "
            "replaced",
        ),
        ("gate: {max_latency_ms: 0}", {}, (), "gate.max_latency_ms must be positive"),
        ("model: {name: '../../etc'}", {}, (), "is not a safe registered-model name"),
        ("model: {name: 'a b'}", {}, (), "is not a safe registered-model name"),
        ("metrics: {slices: [a, b]}", {}, (), "metrics.slices must be a mapping"),
        ("metrics: {slices: {big: ''}}", {}, (), "metrics.slices.big must be a pandas query"),
        ("train: [1, 2]", {}, (), "section 'train' in params.yaml must be a mapping"),
        ("- 1\n- 2", {}, (), "must be a mapping of sections"),
        ("train: {params: {", {}, (), "params.yaml is not valid YAML"),
        ("train: {num_boost_round: 0}", {}, (), "train.num_boost_round must be at least 1"),
        (
            "gate: {mode: dryrun}",
            {},
            (),
            "gate.mode must be one of enabled, dry-run, got 'dryrun' (did you mean \"dry-run\"?)",
        ),
        ("gate: {first_model: promote}", {}, (), "gate.first_model must be one of"),
        ("gate: {min_auc_gian: 0.1}", {}, (), '(did you mean "min_auc_gain"?)'),
        ("gate: {slice_min_auc: {big: 0.9}}", {}, (), "names slice 'big', which metrics.slices"),
        (
            "metrics: {slices: {big: 'a > 1'}}\ngate: {slice_min_auc: {big: 2}}",
            {},
            (),
            "gate.slice_min_auc.big must be an AUC in [0, 1]",
        ),
        ("gate: {confidence: 1.5}", {}, (), "gate.confidence must be in [0.5, 1)"),
    ],
)
def test_bad_settings_name_the_fix(tmp_path, params, env, overrides, message) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, params, env, overrides)
    assert message in str(info.value)
    assert info.value.fix, "every config error says how to fix it"
    assert info.value.exit_code == 2


def test_explicit_params_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env={"MLGATE_PARAMS": "nope.yaml"}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env={}, params_file="nope.yaml", cwd=tmp_path)


def test_gate_defaults_and_none_switches_a_check_off(tmp_path: Path) -> None:
    gate = load(tmp_path, "gate: {max_latency_ms: null, min_f1_ratio: 1.02}").gate
    assert gate.min_auc == 0.80 and gate.mode == "enabled" and gate.first_model == "absolute"
    assert gate.max_latency_ms is None and gate.min_f1_ratio == 1.02
    assert gate.reject_significantly_worse is True and gate.max_auc_drop == 0.01
    assert load(tmp_path, env={"MLGATE_GATE_MIN_AUC": ""}).gate.min_auc == 0.80


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("", {}, 0.5),
        ("metrics: {threshold: 0.3}", {}, 0.3),
        ("metrics: {threshold: max_f1}", {}, "max_f1"),
        ("metrics: {threshold: 'precision >= 0.90'}", {}, "precision>=0.9"),
        ("metrics: {threshold: 'Recall>=0.8'}", {}, "recall>=0.8"),
        ("", {"MLGATE_METRICS_THRESHOLD": "0.25"}, 0.25),
        ("", {"MLGATE_METRICS_THRESHOLD": "max_f1"}, "max_f1"),
    ],
)
def test_threshold_is_a_number_or_a_rule(tmp_path: Path, text, env, expected) -> None:
    assert load(tmp_path, text, env=env).metrics.threshold == expected


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load(tmp_path)
    with pytest.raises(AttributeError):
        settings.split.seed = 3  # type: ignore[misc]


def test_the_repository_params_file_loads() -> None:
    from tests.conftest import REPO

    settings = load_settings(env={}, params_file=REPO / "params.yaml")
    assert settings.model.name == "breast-cancer-xgb"
    assert set(settings.metrics.slices) == {"large_masses", "small_masses", "smooth_texture"}

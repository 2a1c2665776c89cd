"""The rules the layout relies on, as tests (issue 22). Read from the source with `ast`, so a
function-level import counts as much as a module-level one: it runs too, only later.

* serving (the serving image) reaches none of the training stack, and no pipeline, registry or
  gate module; the one optional import it may try (xgboost, for a bundle without compiled
  trees) sits in a `try` that handles ImportError;
* a pipeline stage never imports a later stage;
* registry, gate, github and serving never import pipeline;
* each part imports of the others only what its `__init__` docstring allows (gate: github's
  outputs and serving's trees; github: gate's decision; registry: gate and github; serving and
  the foundation: the foundation), and none of the libraries it has no business with (gate and
  github: no mlflow, DVC, pandera, evidently, Dask or XGBoost; registry: no DVC, pandera,
  evidently, Dask or XGBoost);
* nothing but mlgate.settings reads or writes `os.environ`, nor reads a variable by its name
  from an environment mapping (`env.get("NAME")`, `process_env()["NAME"]`);
* each request format module (mlgate.serving.formats) imports no other format module;
* each subpackage says in its docstring what it owns and may import, and imports nothing itself
  (importing `mlgate.registry` must not pull the registry's dependencies).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "mlgate"
TRAINING = ("mlflow", "dvc", "pandera", "evidently", "sklearn", "pandas", "xgboost")
SUBPACKAGES = ("pipeline", "registry", "gate", "serving", "github")
FOUNDATION = {
    "mlgate",
    "mlgate.cli",
    "mlgate.settings",
    "mlgate.errors",
    "mlgate.files",
    "mlgate.faults",  # the named fault points (tests inject kills there); settings checks them
}
# The stages in their order; helpers take the place of the first stage that needs them.
STAGES = {
    "data": 0,
    "split": 0,
    "frames": 0,  # the partition functions (imported by the Dask workers: numpy and pandas only)
    "shards": 0,  # a data version's shards in the DVC remote, read by the Dask workers
    "holdout": 1,  # a dask-trained holdout's rule and digest (the workers hash their rows)
    # validation of a partition, on the Dask workers (numpy, pandas and pandera only)
    "checks": 0,
    "init": 1,  # `mlgate init`: reads the data (data) and writes the schema validate checks
    "validate": 1,
    "lineage": 1,
    "train": 2,
    # the logged model's pyfunc flavour (train logs it; frames encodes with it; no mlgate imports)
    "pyfunc": 0,
    "cluster": 1,  # train.engine: dask (validation, training, the gate's scoring on the workers)
    "onworkers": 2,  # train and evaluate with train.engine: dask, the data on the workers
    "evaluate": 3,
    "promote": 4,
    "export": 5,
    "deploy": 5,
    "rollback": 6,
    "drift": 7,
    "monitor": 7,  # `mlgate monitor`: drift or backtest, for the monitor action
    "demo": 99,  # `make demo` runs every stage
}


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    # (imported module, line, guarded by `except ImportError`)
    imports: list[tuple[str, int, bool]] = field(default_factory=list)


def _modules() -> dict[str, Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = Module(name, path, ast.parse(path.read_text(), filename=str(path)))
    for module in found.values():
        package = (
            module.name if module.path.name == "__init__.py" else module.name.rpartition(".")[0]
        )
        for node, guarded in _walk(module.tree, False):
            if isinstance(node, ast.Import):
                module.imports += [(a.name, node.lineno, guarded) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                for alias in node.names:  # `from mlgate.x import y`: y may be a module
                    full = f"{base}.{alias.name}"
                    module.imports.append((full if full in found else base, node.lineno, guarded))
    return found


def _walk(node: ast.AST, guarded: bool):
    """Every node, and whether it sits in a `try` whose handlers catch ImportError."""
    for child in ast.iter_child_nodes(node):
        inner = guarded
        if isinstance(node, ast.Try) and child in node.body:
            inner = guarded or any(_catches_import_error(h) for h in node.handlers)
        yield child, inner
        yield from _walk(child, inner)


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = (
        {n.id for n in ast.walk(handler.type) if isinstance(n, ast.Name)} if handler.type else set()
    )
    return bool(names & {"ImportError", "ModuleNotFoundError"})


MODULES = _modules()


def _ours(name: str) -> str | None:
    """The mlgate module an import names (`mlgate.x.y` may be `mlgate.x`'s attribute y)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _closure(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for imported, _, _ in MODULES[name].imports:
            ours = _ours(imported) if imported.startswith("mlgate") else None
            if ours:
                todo.append(ours)
                # importing mlgate.a.b runs mlgate.a/__init__ first
                todo += [p for p in _parents(ours) if p in MODULES]
    return seen


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def test_the_layout_is_the_one_these_rules_describe():
    for package in SUBPACKAGES:
        assert f"mlgate.{package}" in MODULES, f"src/mlgate/{package}/__init__.py is missing"
    flat = {m for m in MODULES if m.count(".") == 1 and m.split(".")[1] not in SUBPACKAGES}
    assert flat == FOUNDATION - {"mlgate"} | {"mlgate.__main__"}, (
        "a new top-level module: put it in the subpackage of its concern"
    )
    pipeline = {m.rpartition(".")[2] for m in MODULES if m.startswith("mlgate.pipeline.")}
    assert pipeline == set(STAGES), "give a new pipeline module its place in STAGES"


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_each_subpackage_states_what_it_owns_and_imports_nothing(package):
    init = MODULES[f"mlgate.{package}"]
    doc = ast.get_docstring(init.tree)
    assert doc and "import" in doc, f"{init.path}: say what it owns and what it may import"
    assert not init.imports, f"{init.path} imports {init.imports}: keep the package empty"


def test_serving_reaches_no_training_library_and_no_pipeline_registry_or_gate_module():
    serving = [m for m in MODULES if m.startswith("mlgate.serving")]
    reach = set().union(*(_closure(m) for m in serving))
    allowed = FOUNDATION | {
        "mlgate.github",
        "mlgate.github.outputs",  # cli writes the error annotations
        "mlgate.gate",
        "mlgate.gate.threshold",  # settings checks metrics.threshold with it (it imports errors)
    }
    strays = sorted(m for m in reach if not m.startswith("mlgate.serving") and m not in allowed)
    assert not strays, f"the serving side reaches {strays}"
    bad = [
        f"{MODULES[m].path.relative_to(SRC)}:{line} imports {name}"
        for m in sorted(reach)
        for name, line, guarded in MODULES[m].imports
        if name.split(".")[0] in TRAINING and not guarded
    ]
    assert not bad, "the serving image has none of these: " + "; ".join(bad)


FORMATS = "mlgate.serving.formats"
# What a format module may import of the serving side: the shared checks and types, the bundle.
FORMAT_MAY_IMPORT = {
    f"{FORMATS}.base",
    "mlgate.serving.matrix",
    "mlgate.serving.bundle",
    "mlgate.serving.fastjson",  # the JSON number reader compiled beside the trees
    "mlgate.serving.trees",  # the bundle's (it runs when the bundle is imported)
}


def _format_modules() -> set[str]:
    return {m for m in MODULES if m.startswith(f"{FORMATS}.") and m != f"{FORMATS}.base"}


def _format_strays(imports: dict[str, list[tuple[str, int]]], formats: set[str]) -> list[str]:
    """Each format module's imports of the serving side outside FORMAT_MAY_IMPORT: another
    format, the registry, the app, the metrics."""
    return [
        f"{name}:{line} imports {imported}"
        for name in sorted(formats)
        for imported, line in imports[name]
        if imported.startswith("mlgate.serving")
        and (_ours(imported) or imported) not in FORMAT_MAY_IMPORT
    ]


def test_each_request_format_imports_no_other_format():
    """Adding a request format is one module and one registry entry: formats share only
    mlgate.serving.matrix and formats.base, never each other's code (issue 22)."""
    formats = _format_modules()
    assert {f"{FORMATS}.mlflow_json", f"{FORMATS}.csv", f"{FORMATS}.oip"} <= formats
    imports = {m: [(i, line) for i, line, _ in MODULES[m].imports] for m in formats}
    strays = _format_strays(imports, formats)
    assert not strays, "a format module reaches beyond the shared checks: " + "; ".join(strays)


def test_every_format_module_is_registered_and_the_check_is_not_vacuous():
    from mlgate.serving.formats import FORMATS as registry

    registered = {fmt.parse.__module__ for fmt in registry.values()}
    assert registered == _format_modules(), "register each format module in FORMATS"
    # the check above sees an import of another format, and of the registry
    fake = {f"{FORMATS}.csv": [(f"{FORMATS}.oip", 3), (FORMATS, 4), ("mlgate.serving.matrix", 5)]}
    assert _format_strays(fake, {f"{FORMATS}.csv"}) == [
        f"{FORMATS}.csv:3 imports {FORMATS}.oip",
        f"{FORMATS}.csv:4 imports {FORMATS}",
    ]


def test_no_stage_imports_a_later_stage():
    bad = []
    for name, module in MODULES.items():
        if not name.startswith("mlgate.pipeline."):
            continue
        rank = STAGES[name.rpartition(".")[2]]
        for imported, line, _ in module.imports:
            ours = _ours(imported) if imported.startswith("mlgate.pipeline.") else None
            if ours and STAGES[ours.rpartition(".")[2]] > rank:
                bad.append(f"{module.path.relative_to(SRC)}:{line} imports {ours}")
    assert not bad, "a stage imports a later stage: " + "; ".join(bad)


def test_only_the_pipeline_imports_the_pipeline():
    bad = [
        f"{module.path.relative_to(SRC)}:{line} imports {imported}"
        for name, module in MODULES.items()
        if not name.startswith("mlgate.pipeline")
        for imported, line, _ in module.imports
        if imported.startswith("mlgate.pipeline")
    ]
    assert not bad, "; ".join(bad)


def test_nothing_but_settings_touches_os_environ():
    bad = []
    for name, module in MODULES.items():
        if name == "mlgate.settings":
            continue
        for node in ast.walk(module.tree):
            hit = (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in {"os", "posix"}
                and node.attr in {"environ", "environb", "getenv", "putenv", "unsetenv"}
            ) or (
                isinstance(node, ast.ImportFrom)
                and node.module in {"os", "posix"}
                and {a.name for a in node.names} & {"environ", "environb", "getenv", "putenv"}
            )
            if hit:
                bad.append(f"{module.path.relative_to(SRC)}:{node.lineno}")
    assert not bad, (
        "read the environment through mlgate.settings (process_env, load_settings): "
        + ", ".join(bad)
    )


# What each part may import of mlgate outside itself (pipeline: anything but a later stage),
# as its __init__ docstring says, and the libraries it never imports (at any level).
DASK = ("dask", "distributed")
MAY_IMPORT = {
    "foundation": {"mlgate.gate.threshold", "mlgate.github.outputs"},
    "gate": {"mlgate.github.outputs", "mlgate.serving.trees"},
    "github": {"mlgate.gate.decision"},
    "registry": {"mlgate.gate.*", "mlgate.github.*"},
    "serving": set(),
}
NEVER = {
    "foundation": (*TRAINING, *DASK, "docker"),
    "gate": ("mlflow", "dvc", "pandera", "evidently", "sklearn", "xgboost", *DASK, "docker"),
    "github": (*TRAINING, *DASK, "docker"),
    "registry": ("dvc", "pandera", "evidently", "sklearn", "xgboost", *DASK, "docker"),
    "serving": ("mlflow", "dvc", "pandera", "evidently", "sklearn", "pandas", *DASK, "docker"),
}


def _part(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in SUBPACKAGES else "foundation"


def _allowed(imported: str, part: str) -> bool:
    if _part(imported) in {part, "foundation"}:
        return True
    return any(
        imported == rule
        or (rule.endswith(".*") and imported.startswith(rule[:-1]))
        # `from mlgate.gate import decision` imports the package first
        or rule.startswith(imported + ".")
        for rule in MAY_IMPORT[part]
    )


def _strays(modules: dict[str, Module]) -> list[str]:
    bad = []
    for name, module in sorted(modules.items()):
        part = _part(name)
        if part == "pipeline":
            continue
        for imported, line, guarded in module.imports:
            where = f"{module.path.relative_to(SRC)}:{line} imports {imported}"
            if imported.startswith("mlgate"):
                ours = _ours(imported) or imported
                if not _allowed(ours, part):
                    bad.append(f"{where} (mlgate.{part} may import {sorted(MAY_IMPORT[part])})")
            elif imported.split(".")[0] in NEVER[part] and not guarded:
                bad.append(f"{where} (mlgate.{part} never imports it)")
    return bad


def test_each_part_imports_only_what_its_docstring_allows():
    """gate decides from scores and never reads the registry; github talks to GitHub and never
    moves a version; registry moves pointers and never trains or validates (issue 22)."""
    bad = _strays(MODULES)
    assert not bad, "; ".join(bad)


def test_the_import_rules_see_a_stray():
    """Not vacuous: gate importing the registry or mlflow, github importing the registry, a
    function-level import in serving of pandas: each is named."""
    tree = ast.parse("")
    fake = {
        "mlgate.gate.decision": [("mlgate.registry.moves", 3, False), ("mlflow", 4, False)],
        "mlgate.github.comment": [("mlgate.registry.tracking", 5, False), ("requests", 6, False)],
        "mlgate.serving.app": [("pandas", 7, False), ("xgboost", 8, True)],
        "mlgate.registry.doctor": [("mlgate.gate.decision", 9, False), ("mlflow", 10, False)],
    }
    modules = {
        name: Module(name, SRC / (name.replace(".", "/") + ".py"), tree, imports)
        for name, imports in fake.items()
    }
    assert [line.split(" (")[0] for line in _strays(modules)] == [
        "mlgate/gate/decision.py:3 imports mlgate.registry.moves",
        "mlgate/gate/decision.py:4 imports mlflow",
        "mlgate/github/comment.py:5 imports mlgate.registry.tracking",
        "mlgate/serving/app.py:7 imports pandas",
    ]


# An environment variable's name, as a string (GITHUB_SHA, MLGATE_PARAMS, ...).
ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+")


def _env_reads(tree: ast.AST) -> list[int]:
    """Lines that read a variable by name from an environment: `X.get("NAME")` or `X["NAME"]`
    where X is `process_env()` or a name ending in `env`/`environ`."""

    def environment(node: ast.AST) -> bool:
        if isinstance(node, ast.Call):
            func = node.func
            return (
                isinstance(func, ast.Name | ast.Attribute)
                and (getattr(func, "id", None) or getattr(func, "attr", None)) == "process_env"
            )
        name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")
        return isinstance(node, ast.Name | ast.Attribute) and name.endswith(("env", "environ"))

    def named(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and bool(ENV_NAME.fullmatch(node.value))
        )

    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and environment(node.func.value)
            and node.args
            and named(node.args[0])
        ) or (isinstance(node, ast.Subscript) and environment(node.value) and named(node.slice)):
            lines.append(node.lineno)
    return lines


def test_nothing_but_settings_reads_a_variable_by_its_name():
    """A variable read elsewhere is a setting with no precedence, no check and no row in
    docs/settings.md: settings.py reads it and hands out what it means."""
    bad = [
        f"{module.path.relative_to(SRC)}:{line}"
        for name, module in MODULES.items()
        if name != "mlgate.settings"
        for line in _env_reads(module.tree)
    ]
    assert not bad, "read it in mlgate.settings (a function of the env mapping): " + ", ".join(bad)
    caught = ast.parse(
        'a = process_env().get("PROMETHEUS_MULTIPROC_DIR")\nb = env["GITHUB_SHA"]\n'
        'c = self.env.get("MLGATE_PARAMS", "")\nd = env.get(key)\ne = os.environ["HOME_DIR"]\n'
        'f = settings.get("NOT_AN_ENV")\n'
    )
    assert _env_reads(caught) == [1, 2, 3, 5]


def test_the_contract_catches_what_it_forbids(tmp_path):
    """The checks above are not vacuous: the walker sees a function-level import, a guarded
    import is told apart, and os.environ is found in an attribute."""
    tree = ast.parse(
        textwrap.dedent(
            """
            import os
            def f():
                import pandas
                try:
                    import xgboost
                except ImportError:
                    pass
                return os.environ
            """
        )
    )
    seen = {
        n.names[0].name: guarded for n, guarded in _walk(tree, False) if isinstance(n, ast.Import)
    }
    assert seen == {"os": False, "pandas": False, "xgboost": True}
    assert any(isinstance(n, ast.Attribute) and n.attr == "environ" for n in ast.walk(tree))


BLOCKER = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked: the serving image does not have it")
sys.meta_path.insert(0, Block())
"""


def test_the_serving_package_imports_and_scores_with_the_training_stack_blocked(tmp_path):
    """The serving modules import, and a compiled bundle loads and scores, in a process where
    importing any training library raises. The scores are the booster's (xgboost, here)."""
    xgb = pytest.importorskip("xgboost")
    from mlgate.serving.bundle import write_bundle

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 2}, xgb.DMatrix(x, label=y), 5
    )
    bundle = tmp_path / "bundle"
    write_bundle(
        bundle,
        bytes(booster.save_raw("ubj")),
        name="m",
        version="1",
        run_id="r",
        features=["a", "b", "c", "d"],
        threshold=0.5,
        data_md5="",
        commit="",
    )
    rows = tmp_path / "rows.npy"
    np.save(rows, x[:20])
    probe = BLOCKER.format(blocked=TRAINING) + textwrap.dedent(
        f"""
        import json, pkgutil, importlib
        import numpy as np
        import mlgate.serving
        for m in pkgutil.iter_modules(mlgate.serving.__path__):
            importlib.import_module("mlgate.serving." + m.name)
        from mlgate.serving.bundle import load_bundle
        bundle = load_bundle(__import__("pathlib").Path({str(bundle)!r}))
        scores = bundle.predict(np.load({str(rows)!r}))
        print(json.dumps({{"engine": bundle.trees.engine, "scores": scores.tolist(),
              "loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr
    import json

    out = json.loads(done.stdout.splitlines()[-1])
    assert out["loaded"] == [] and out["engine"] != "xgboost"
    expected = booster.predict(xgb.DMatrix(x[:20]))
    np.testing.assert_allclose(out["scores"], expected, rtol=1e-6, atol=1e-7)


def test_the_dask_workers_validation_module_imports_no_mlflow_or_xgboost(tmp_path):
    """`checks` (a partition validated on a worker) needs pandera, and nothing heavier: no
    MLflow, XGBoost, DVC, evidently or scikit-learn; and a partition's summary is computed."""
    blocked = ("mlflow", "xgboost", "dvc", "evidently", "sklearn")
    probe = BLOCKER.format(blocked=blocked) + textwrap.dedent(
        """
        import json
        import pandas as pd
        from mlgate.pipeline import checks
        text = "columns:\\n  a:\\n    dtype: int64\\n    checks:\\n      greater_than: 1\\n"
        part = pd.DataFrame({"a": [1, 2, 3], "y": [0, 1, 1]})
        summary = checks.summarize(part, text, "y", None, {})
        print(json.dumps({"failed": [(f.column, f.count, f.rows) for f in summary.failures],
              "loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr
    import json

    out = json.loads(done.stdout.splitlines()[-1])
    assert out == {"failed": [["a", 1, [0]]], "loaded": []}


def test_the_blocker_blocks(tmp_path):
    """The probe's finder really refuses: without it the check above could pass vacuously."""
    probe = BLOCKER.format(blocked=("wave",)) + "import wave\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode != 0 and "wave is blocked" in done.stderr


def test_the_dask_workers_partition_modules_import_no_training_library(tmp_path):
    """What a Dask worker imports for its first task (`cluster`'s partition functions, `frames`:
    encode, label, hash a partition; `shards`: read a shard and check its md5) loads neither
    MLflow, pandera, XGBoost, DVC nor Dask itself, in a process where importing any of them
    raises; and the functions run."""
    blocked = ("mlflow", "pandera", "xgboost", "dvc", "evidently", "sklearn", "dask")
    probe = BLOCKER.format(blocked=blocked) + textwrap.dedent(
        """
        import json
        import pandas as pd
        from mlgate.pipeline import cluster, frames, holdout, shards
        from mlgate.settings import load_settings
        settings = load_settings(env={}, overrides=["data.target=y"])
        part = pd.DataFrame({"a": [1, 2, 3], "c": ["x", "y", None], "y": [0, 1, 1]})
        x = frames.encode(frames.features_of(part, settings), {"c": ["x", "y"]})
        print(json.dumps({"labels": frames.labels_of(part, settings).tolist(),
              "codes": x["c"].fillna(-1).tolist(),
              "hashes": len(set(frames.row_hash(part, target="y", seed=1, id_column=None))),
              "parts": len(cluster.part_of(part, target="y", seed=1, validation_fraction=0.2,
                                           holdout_fraction=0.2, id_column=None)),
              "surveyed": cluster._survey_part(part.assign(**{cluster.PART: [0, 1, 2]}),
                                               target="y", categorical=["c"])["rows"],
              "digest": len(holdout.digest(part.columns, holdout.row_hashes(part))),
              "loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr
    import json

    out = json.loads(done.stdout.splitlines()[-1])
    assert out == {
        "labels": [0, 1, 1],
        "codes": [0.0, 1.0, -1.0],
        "hashes": 3,
        "parts": 3,
        "surveyed": {"0": 1, "1": 1, "2": 1},
        "digest": 64,
        "loaded": [],
    }

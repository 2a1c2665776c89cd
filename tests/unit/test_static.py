"""Static checks of what ships: workflows, actions, Dockerfile, lock, README and docs/."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

BIN = Path(sys.executable).parent
WORKFLOW_FILES = sorted(
    [
        *REPO.glob(".github/workflows/*.yml"),
        *REPO.glob(".github/actions/*/action.yml"),
        *REPO.glob("examples/**/.github/workflows/*.yml"),
    ]
)


REUSABLE = [
    "train.yml",
    "evaluate.yml",
    "pipeline.yml",
    "pr-gate.yml",
    "deploy.yml",
    "rollback.yml",
    "drift-monitor.yml",
]


def tool(name: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / name), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_actionlint_is_clean() -> None:
    # actionlint checks run: scripts only when shellcheck is there (.ci/run installs it)
    assert shutil.which("shellcheck"), "install shellcheck (apt-get install shellcheck)"
    done = tool("actionlint", "-no-color")
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_checks_the_example_workflow(tmp_path: Path) -> None:
    done = tool(
        "actionlint", "-no-color", *map(str, REPO.glob("examples/**/.github/workflows/*.yml"))
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_zizmor_finds_nothing_even_pedantic() -> None:
    done = tool("zizmor", "--offline", "--persona=pedantic", "--no-progress", ".github", "examples")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No findings" in done.stdout + done.stderr


def test_hadolint_is_clean() -> None:
    done = tool("hadolint", "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_expression_inside_run(path: Path) -> None:
    """Every ${{ }} reaches a script through env:, never spliced into run:."""

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "run":
                    assert "${{" not in str(value), f"{path.name}: expression in run: {value}"
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_remote_actions_are_pinned_by_sha_with_a_version_comment(path: Path) -> None:
    for line in path.read_text().splitlines():
        match = re.match(r"\s*-?\s*uses:\s*(\S+)(.*)", line)
        if not match or match.group(1).startswith(("./", "$/")):
            continue
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", match.group(1)), line
        assert re.search(r"#\s*v\d", match.group(2)), f"no version comment: {line}"


WORKFLOWS = sorted(
    [*REPO.glob(".github/workflows/*.yml"), *REPO.glob("examples/**/.github/workflows/*.yml")]
)


def test_workflows_start_with_no_permissions_and_every_job_has_a_timeout() -> None:
    for path in WORKFLOWS:
        doc = yaml.safe_load(path.read_text())
        assert doc["permissions"] == {}, path.name
        for name, job in doc["jobs"].items():
            assert "permissions" in job, f"{path.name}:{name} has no permissions"
            assert isinstance(job["permissions"], dict), f"{path.name}:{name}: name each scope"
            if "uses" not in job:  # a called workflow sets its own timeouts
                assert "timeout-minutes" in job, f"{path.name}:{name} has no timeout"


def ungrounded_grants(text: str) -> list[str]:
    """The lines of a workflow that grant a job a permission without a comment saying what for
    (`contents: read # to check out params.yaml`): a multi-line `permissions:` block's lines,
    or a one-line `permissions: {...}` (an empty one grants nothing and needs none)."""
    bad, block = [], None
    for number, line in enumerate(text.splitlines(), 1):
        indent = len(line) - len(line.lstrip())
        if block is not None and line.strip() and indent > block:
            if "#" not in line:
                bad.append(f"{number}: {line.strip()}")
            continue
        block = None
        if match := re.match(r"(\s+)permissions:\s*(.*)$", line):
            grant = match.group(2).split("#")[0].strip()
            if not grant:
                block = len(match.group(1))
            elif grant != "{}" and "#" not in match.group(2):
                bad.append(f"{number}: {line.strip()}")
    return bad


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_granted_permission_says_what_it_is_for(path: Path) -> None:
    assert not ungrounded_grants(path.read_text()), f"{path.name}: say why (`# to ...`)"


def test_the_permission_comment_check_sees_a_bare_grant() -> None:
    text = (
        "permissions: {}\njobs:\n  a:\n    permissions:\n      contents: read # to check out\n"
        "      packages: write\n    steps: []\n  b:\n    permissions: {issues: write}\n"
        "  c:\n    permissions: {}\n"
    )
    assert ungrounded_grants(text) == ["6: packages: write", "9: permissions: {issues: write}"]


@pytest.mark.parametrize("workflow", REUSABLE)
def test_reusable_workflow_inputs_outputs_and_secrets_are_described(workflow: str) -> None:
    doc = yaml.safe_load((REPO / ".github/workflows" / workflow).read_text())
    call = doc[True]["workflow_call"]  # PyYAML reads `on:` as True
    for kind in ("inputs", "outputs", "secrets"):
        for name, spec in call[kind].items():
            assert spec.get("description"), f"{kind}.{name} has no description"
            if kind == "inputs":
                assert spec.get("type"), f"inputs.{name} has no type"


def test_workflow_outputs() -> None:
    call = yaml.safe_load((REPO / ".github/workflows/train.yml").read_text())[True]["workflow_call"]
    assert set(call["outputs"]) == {
        "run-id",
        "model-name",
        "model-version",
        "model-uri",
        "data-hash",
    }
    pipeline = yaml.safe_load((REPO / ".github/workflows/pipeline.yml").read_text())
    assert {"model-version", "decision", "staged"} <= set(
        pipeline[True]["workflow_call"]["outputs"]
    )
    gate = yaml.safe_load((REPO / ".github/workflows/pr-gate.yml").read_text())
    assert set(gate[True]["workflow_call"]["outputs"]) == {
        "model-version",
        "decision",
        "comment-url",
    }


def test_the_evaluate_job_is_defined_once() -> None:
    """pipeline.yml and pr-gate.yml call evaluate.yml, which records the verdict without failing
    (promote enforces it in the pipeline, the gate job in the PR gate, which also requires
    verdict == pass); only evaluate.yml uses the evaluate action; within
    each caller the connection secrets are one YAML anchor (PyYAML gives an alias the same
    object), so they cannot drift apart."""
    users = {
        path.name
        for path in REPO.glob(".github/workflows/*.yml")
        if "/.github/actions/evaluate" in path.read_text()
    }
    assert users == {"evaluate.yml"}, users
    for workflow, fail in (("pipeline.yml", False), ("pr-gate.yml", False)):
        jobs = yaml.safe_load((REPO / ".github/workflows" / workflow).read_text())["jobs"]
        assert jobs["evaluate"]["uses"] == "$/.github/workflows/evaluate.yml", workflow
        assert jobs["evaluate"]["with"]["fail-on-gate"] is fail, workflow
        assert jobs["evaluate"]["secrets"] is jobs["train"]["secrets"], workflow
    pipeline = yaml.safe_load((REPO / ".github/workflows/pipeline.yml").read_text())["jobs"]
    promote = next(s for s in pipeline["promote"]["steps"] if s.get("id") == "promote")
    connection = {k: v for k, v in pipeline["train"]["secrets"].items() if "DASK_TLS" not in k}
    assert promote["env"] == connection, "promote gets the connection secrets, not the cluster's"


TLS_SECRETS = {"DASK_TLS_CA", "DASK_TLS_CERT", "DASK_TLS_KEY"}


def test_the_dask_tls_secrets_reach_the_steps_that_connect_and_no_other() -> None:
    """issue 21: train.yml and evaluate.yml declare the three PEM secrets and give them, under
    their own names, to the one step that reaches the cluster; pipeline.yml and pr-gate.yml
    declare and pass them to those two jobs only (not promote, deploy, comment or gate)."""
    for workflow in ("train.yml", "evaluate.yml", "pipeline.yml", "pr-gate.yml"):
        doc = yaml.safe_load((REPO / ".github/workflows" / workflow).read_text())
        declared = doc[True]["workflow_call"]["secrets"]
        assert set(declared) >= TLS_SECRETS, workflow
        assert not any(declared[name]["required"] for name in TLS_SECRETS), workflow
        holders = set()
        for name, job in doc["jobs"].items():
            if any(t in yaml.safe_dump(job) for t in TLS_SECRETS):
                holders.add(name)
            if "uses" in job:
                passed = job.get("secrets") or {}
                if name in ("train", "evaluate"):
                    for t in TLS_SECRETS:
                        assert passed[t] == f"${{{{ secrets.{t} }}}}", (workflow, name, t)
                continue
            for step in job["steps"]:
                env = step.get("env") or {}
                given = TLS_SECRETS & set(env)
                if given:
                    assert step.get("id") in ("train", "evaluate"), (workflow, step)
                    assert {env[t] for t in given} == {f"${{{{ secrets.{t} }}}}" for t in given}
                    assert given == TLS_SECRETS
        expected = (
            {"train", "evaluate"}
            if workflow in ("pipeline.yml", "pr-gate.yml")
            else {workflow.removesuffix(".yml")}
        )
        assert holders == expected, (workflow, holders)


def test_callers_pass_every_input_they_share_with_train_and_evaluate() -> None:
    """pipeline.yml and pr-gate.yml hand each input they share with train.yml / evaluate.yml
    through unchanged (the Dask scheduler's address among them, issue 21): an input declared
    but not passed would silently use the called workflow's default."""
    called = {
        job: set(
            yaml.safe_load((REPO / ".github/workflows" / f"{job}.yml").read_text())[True][
                "workflow_call"
            ]["inputs"]
        )
        for job in ("train", "evaluate")
    }
    for workflow in ("pipeline.yml", "pr-gate.yml"):
        doc = yaml.safe_load((REPO / ".github/workflows" / workflow).read_text())
        own = set(doc[True]["workflow_call"]["inputs"])
        assert "dask-scheduler" in own, workflow
        for job, inputs in called.items():
            passed = doc["jobs"][job]["with"]
            for name in sorted(own & inputs):
                assert passed.get(name) == f"${{{{ inputs.{name} }}}}", (workflow, job, name)


def test_write_permissions_live_on_three_jobs_only() -> None:
    """Least privilege: in the reusable workflows, only the comment job writes to pull requests,
    only the Environment-gated deploy job writes packages, and only the drift monitor's alert job
    (which checks out nothing and runs only when drift was found) writes issues and dispatches;
    callers grant them at the call site (a caller's grant caps the callee's jobs). act ignores
    permissions, so read them."""
    writers = []
    for path in REPO.glob(".github/workflows/*.yml"):
        for name, job in yaml.safe_load(path.read_text())["jobs"].items():
            permissions = job.get("permissions") or {}
            if "uses" not in job and any(v == "write" for v in permissions.values()):
                writers.append((path.name, name, dict(permissions)))
    assert sorted(writers) == [
        ("deploy.yml", "deploy", {"contents": "read", "packages": "write", "actions": "read"}),
        ("drift-monitor.yml", "alert", {"issues": "write", "actions": "write"}),
        ("pr-gate.yml", "comment", {"pull-requests": "write"}),
    ], writers
    alert = yaml.safe_load((REPO / ".github/workflows/drift-monitor.yml").read_text())["jobs"]
    assert alert["alert"]["if"] == "${{ needs.check.outputs.stale == 'true' }}"
    assert not any("checkout" in step.get("uses", "") for step in alert["alert"]["steps"])
    for workflow, job in (("deploy.yml", "deploy"), ("rollback.yml", "rollback")):
        spec = yaml.safe_load((REPO / ".github/workflows" / workflow).read_text())["jobs"][job]
        assert spec["environment"]["name"] == "${{ inputs.environment }}", workflow
        assert spec["concurrency"]["cancel-in-progress"] is False, workflow
    groups = {
        yaml.safe_load((REPO / ".github/workflows" / w).read_text())["jobs"][j]["concurrency"][
            "group"
        ]
        for w, j in (("deploy.yml", "deploy"), ("rollback.yml", "rollback"))
    }
    assert len(groups) == 1, "a rollback and a deployment of one model never run at once"
    gate = yaml.safe_load((REPO / ".github/workflows/pr-gate.yml").read_text())
    assert gate["jobs"]["gate"]["if"] == "${{ always() }}", "a skipped check must not pass"
    assert gate["jobs"]["gate"]["permissions"] == {}
    for path in REPO.glob(".github/workflows/*.yml"):
        on = yaml.safe_load(path.read_text())[True]
        assert "pull_request_target" not in on, path.name


def test_registry_credentials_reach_only_the_environment_gated_jobs() -> None:
    """Registry credentials are needed to push or check an image: only the deploy and rollback
    jobs, behind the Environment, see them. No example reacts to pull_request_target."""
    holders = set()
    for path in REPO.glob(".github/workflows/*.yml"):
        for name, job in yaml.safe_load(path.read_text())["jobs"].items():
            if "uses" not in job and "secrets.REGISTRY_" in yaml.safe_dump(job):
                holders.add((path.name, name))
    assert holders == {("deploy.yml", "deploy"), ("rollback.yml", "rollback")}, holders
    for path in REPO.glob("examples/**/.github/workflows/*.yml"):
        assert "pull_request_target" not in path.read_text(), path


def test_lock_header_names_the_regenerating_command() -> None:
    for name in ("requirements.lock", "requirements-dev.lock"):
        head = (REPO / name).read_text().splitlines()[:2]
        assert head[1].strip("# ") == "make lock", head


@pytest.mark.parametrize("example", ["pipeline.yml", "pr-gate.yml", "rollback.yml", "monitor.yml"])
def test_readme_holds_the_example_callers_verbatim(example: str) -> None:
    readme = (REPO / "README.md").read_text()
    text = (REPO / "examples/consumer/.github/workflows" / example).read_text()
    assert text in readme
    assert len(text.strip().splitlines()) <= 15


def test_readme_documents_the_first_commands() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    # what a caller needs besides the workflow, one click away
    for link in ("docs/workflows.md#secrets", "docs/production.md#one-time-setup", "docs/cli.md"):
        assert f"]({link})" in readme, f"README.md: link {link}"
    ci = (REPO / ".ci/run").read_text()
    assert "make test" in ci


DOCS = REPO / "docs"


def section(page: str, heading: str) -> str:
    """The text of a docs page under `heading` (a whole heading line, e.g. '## Inputs'), up to
    the next heading of the same or a higher level: a row counts only in its own table."""
    lines = (DOCS / page).read_text().splitlines()
    level = len(heading) - len(heading.lstrip("#"))
    start = lines.index(heading)  # ValueError: the page lost its section
    out = []
    for line in lines[start + 1 :]:
        match = re.match(r"(#+) ", line)
        if match and len(match.group(1)) <= level:
            break
        out.append(line)
    return "\n".join(out)


@pytest.mark.parametrize("workflow", REUSABLE)
def test_docs_tables_name_every_input_secret_and_output(workflow: str) -> None:
    call = yaml.safe_load((REPO / ".github/workflows" / workflow).read_text())[True][
        "workflow_call"
    ]
    for kind in ("inputs", "secrets", "outputs"):
        table = section("workflows.md", f"## {kind.capitalize()}")
        for name in call[kind]:
            assert f"| `{name}` |" in table, (
                f"docs/workflows.md ## {kind.capitalize()} has no row for {workflow} {kind}.{name}"
            )


def table_rows(page: str, heading: str) -> list[list[str]]:
    """The cells of each row of the table under `heading` that names something in backticks."""
    return [
        [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        for line in section(page, heading).splitlines()
        if line.startswith("| `")
    ]


def test_docs_tables_name_nothing_the_workflows_do_not_have() -> None:
    calls = [
        yaml.safe_load((REPO / ".github/workflows" / w).read_text())[True]["workflow_call"]
        for w in REUSABLE
    ]
    for kind in ("inputs", "secrets", "outputs"):
        real = {name for call in calls for name in call[kind]}
        documented = {row[0].strip("`") for row in table_rows("workflows.md", f"## {kind.title()}")}
        assert documented <= real, f"docs/workflows.md {kind} of no workflow: {documented - real}"


@pytest.mark.parametrize("workflow", REUSABLE)
def test_docs_inputs_table_gives_each_inputs_type_and_default(workflow: str) -> None:
    """A row per input name (two where workflows differ): its type, and its default (`required`
    for a required input) among the Default cell's values."""
    call = yaml.safe_load((REPO / ".github/workflows" / workflow).read_text())[True][
        "workflow_call"
    ]
    rows = table_rows("workflows.md", "## Inputs")
    for name, spec in call["inputs"].items():
        default = spec.get("default", "")
        if spec.get("required"):
            expected = "required"
        elif isinstance(default, bool):
            expected = f"`{str(default).lower()}`"
        else:
            expected = f"`{default}`" if default != "" else '`""`'
        cells = [(row[1], row[2]) for row in rows if row[0] == f"`{name}`"]
        assert any(
            kind == spec["type"] and expected in default_cell for kind, default_cell in cells
        ), (
            f"docs/workflows.md ## Inputs: {workflow} {name} is {spec['type']}, default "
            f"{expected}; the rows say {cells}"
        )


def settings_rows() -> dict[str, list[str]]:
    """docs/settings.md's table: each section's keys, the names in backticks outside the
    parentheses (the parentheses hold defaults and notes)."""
    rows = {}
    for cells in table_rows("settings.md", "# Settings"):
        if not cells[0].strip("`").islower():  # the variables' table below it
            continue
        text, depth, keys = cells[1], 0, []
        for token in re.finditer(r"[()]|`([^`]+)`", text):
            if token.group(0) in "()":
                depth += 1 if token.group(0) == "(" else -1
            elif depth == 0 and token.group(1).isidentifier():
                keys.append(token.group(1))
        rows[cells[0].strip("`")] = keys
    return rows


def test_docs_settings_table_names_every_key_and_no_other() -> None:
    import dataclasses

    from mlgate.settings import SECTIONS

    rows = settings_rows()
    assert set(rows) == set(SECTIONS), "docs/settings.md: a row per section of mlgate.settings"
    for name, section in SECTIONS.items():
        if name == "gate":  # docs/gate.md's policy table (test_docs_policy_table_...)
            continue
        keys = {f.name for f in dataclasses.fields(section)}
        assert set(rows[name]) == keys, (
            f"docs/settings.md `{name}`: missing {sorted(keys - set(rows[name]))}, "
            f"no such key {sorted(set(rows[name]) - keys)}"
        )


ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+")


def test_docs_name_every_variable_settings_reads_and_no_other() -> None:
    """The names settings.py spells out (string constants shaped like a variable, outside
    f-strings) are the rows of docs/settings.md's variables table."""
    import ast

    tree = ast.parse((REPO / "src/mlgate/settings.py").read_text())
    inside_f = {
        id(part)
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
        for part in node.values
    }
    read = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in inside_f
        and ENV_NAME.fullmatch(node.value)
    }
    table = section("settings.md", "## Other environment variables")
    documented = {
        name
        for line in table.splitlines()
        if line.startswith("| `")
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1])
    }
    assert documented == read, (
        f"docs/settings.md variables: missing {sorted(read - documented)}, "
        f"not read {sorted(documented - read)}"
    )


def _flags(path: Path, entry: str) -> tuple[set[str], set[str]]:
    """The `--flags` that `entry` of the module at `path` adds (with the module's functions it
    calls, at any depth), and the names of the `cli.` helpers it calls. Read with `ast`:
    importing every command's module would import MLflow, DVC and evidently."""
    import ast

    functions = {
        node.name: node
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef)
    }
    flags, helpers, seen, todo = set(), set(), set(), [entry]
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        for node in ast.walk(functions[name]):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if called == "add_argument":
                flags |= {
                    a.value
                    for a in node.args
                    if isinstance(a, ast.Constant) and str(a.value).startswith("--")
                }
            elif called in functions:
                todo.append(called)
            elif isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "cli":
                helpers.add(called)
    return flags, helpers


def test_docs_cli_page_names_every_command_and_flag_and_no_other() -> None:
    from mlgate.cli import COMMANDS, FLAGS

    cli_py = REPO / "src/mlgate/cli.py"
    common, _ = _flags(cli_py, "stage_parser")
    common |= set(FLAGS)  # added in a loop over FLAGS
    candidate, _ = _flags(cli_py, "add_candidate_version")
    documented_common = {
        row[0].strip("`") for row in table_rows("cli.md", "## Flags every stage takes")
    }
    assert documented_common == common, "docs/cli.md: the flags of cli.stage_parser"
    rows = {row[0].strip("`"): row for row in table_rows("cli.md", "## The commands")}
    assert set(rows) == set(COMMANDS), "docs/cli.md: a row per command of mlgate.cli.COMMANDS"
    for command, (target, _) in COMMANDS.items():
        module, _, function = target.partition(":")
        path = REPO / "src" / (module.replace(".", "/") + ".py")
        flags, helpers = _flags(path, function or "main")
        if "add_candidate_version" in helpers:
            flags |= candidate
        documented = set(re.findall(r"`(--[a-z][a-z-]*)", rows[command][2]))
        assert documented == flags, (
            f"docs/cli.md `{command}`: missing {sorted(flags - documented)}, "
            f"no such flag {sorted(documented - flags)}"
        )


def test_docs_policy_table_names_every_gate_key() -> None:
    import dataclasses

    from mlgate.settings import GateSettings

    table = section("gate.md", "### The gate policy")
    for field in dataclasses.fields(GateSettings):
        assert f"| `{field.name}` |" in table, f"docs/gate.md policy table lacks gate.{field.name}"


def test_docs_list_every_exit_code() -> None:
    from mlgate.errors import EXIT_CODES

    rows = {}
    for line in (DOCS / "exit-codes.md").read_text().splitlines():
        if match := re.match(r"\| (\d+) \| ([^|]+?) \|", line):
            rows[int(match.group(1))] = match.group(2)
    assert rows == EXIT_CODES, "docs/exit-codes.md and mlgate.errors.EXIT_CODES disagree"


def test_every_error_class_has_its_exit_code_listed_and_every_code_a_class() -> None:
    """EXIT_CODES (the table above, `mlgate --help`) and the classes of mlgate.errors agree:
    a new class with a new code needs its row, and no row outlives its class."""
    import inspect

    from mlgate import errors

    classes = [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.MlgateError)
    ]
    codes = {cls.exit_code for cls in classes}
    assert codes | {0} == set(errors.EXIT_CODES), (
        f"mlgate.errors: codes of no class {set(errors.EXIT_CODES) - codes - {0}}, "
        f"classes without a row {codes - set(errors.EXIT_CODES)}"
    )
    for cls in classes:
        assert cls.__doc__, f"{cls.__name__}: say when it is raised"


# -- scripts/: the operational scripts a user runs (docs/production.md "Docker") -----------
SCRIPTS = sorted(REPO.glob("scripts/*.sh"))


def test_scripts_are_there_and_executable() -> None:
    names = {p.name for p in SCRIPTS}
    assert {"start-docker.sh", "build-base-image.sh", "download-wheels.sh"} <= names
    for path in SCRIPTS:
        assert path.stat().st_mode & 0o111, f"{path.name} is not executable"
        assert path.read_text().startswith("#!/usr/bin/env bash\n")
        assert "set -euo pipefail" in path.read_text()


def shell_scripts() -> list[Path]:
    """Every shell script git tracks (or would add), found by its #! line, whatever its name:
    scripts/*.sh, the setup action's *.sh, .ci/run."""
    found = []
    for name in subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines():
        path = REPO / name
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as handle:
                first = handle.readline(100)
            if re.match(rb"#!\S*(/env )?\S*(ba)?sh\b", first):
                found.append(path)
    return sorted(found)


SHELL_SCRIPTS = shell_scripts()


def test_every_shell_script_is_found() -> None:
    names = {str(p.relative_to(REPO)) for p in SHELL_SCRIPTS}
    assert {
        ".ci/run",
        ".github/actions/setup/install.sh",
        ".github/actions/setup/locate.sh",
        *(f"scripts/{p.name}" for p in SCRIPTS),
    } <= names, names


def test_composite_actions_hold_no_shell_logic() -> None:
    """A composite action's run: is one command line (the logic is in mlgate, where it is
    tested): no branches, loops, functions or `||` / `&&` chains in shell."""
    for path in REPO.glob(".github/actions/*/action.yml"):
        for step in yaml.safe_load(path.read_text())["runs"]["steps"]:
            script = step.get("run", "")
            lines = [ln for ln in script.splitlines() if ln.strip() and not ln.startswith("#")]
            assert len(lines) <= 1, f"{path.parent.name}: {script}"
            assert not re.search(r"\b(case|if|for|while)\b|\|\||&&|\(\)", script), script


@pytest.mark.parametrize("path", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_shellcheck_is_clean(path: Path) -> None:
    assert shutil.which("shellcheck"), "install shellcheck (apt-get install shellcheck)"
    done = subprocess.run(
        ["shellcheck", "--severity=style", "--external-sources", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_docs_docker_path_uses_the_scripts() -> None:
    page = section("production.md", "### Docker on your machine (scripts/)")
    for path in SCRIPTS:
        assert f"scripts/{path.name}" in page, f"docs/production.md does not mention {path.name}"


def test_healthcheck_follows_the_serve_port() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    health = dockerfile[dockerfile.index("HEALTHCHECK") :].split("\n\n")[0]
    assert "MLGATE_SERVE_PORT" in health and ":8080/" not in health
    assert "mlgate image" not in dockerfile, "the comment names commands that exist"

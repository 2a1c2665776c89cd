"""A stand-in for the GitHub REST API that holds every request to GitHub's published OpenAPI
description (npm `@octokit/openapi`, pinned with its integrity hash).

Each request is matched to an operation of the description and validated with openapi-core
(path, query, headers, body); a request that does not match is answered 400 and recorded in
`violations`, which every test asserts empty. Answers start from the description's own examples.
Issues and issue comments are kept in memory so that create, list and update behave as on
GitHub (list filters by state and label, and pull requests are issues too); workflow and
repository dispatches are recorded in `dispatches` and answered 204 as GitHub does. Each answer
built from that state is validated against the operation's response schema before it is sent.

`respond(operation, payload)` scripts the answers of one operation (an Environment without
reviewers, the approvals of a run), held to its response schema like the stateful answers.
Faults are queued with `fail_next(status, headers)`: 401 as GitHub sends it for bad credentials,
and the statuses the description declares (403, 404, 410, 422, 429), including rate limits.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

PACKAGE = "@octokit/openapi@23.0.2"
INTEGRITY = "sha512-pV8M7L9GY23AybNvTmo2nyjmpmnt6+2sRE/tqr0ZLQcPS4lnw7u5eZGNmwRNkBC3D7gZXbFx5AHzLUVRBXGDhg=="
MEMBER = "package/generated/api.github.com.json"
SERVER = "https://api.github.com"  # the description's server URL
VALID_TOKEN = "ghs_test-token-for-the-stand-in"
STATEFUL = {
    "issues/list-comments",
    "issues/create-comment",
    "issues/update-comment",
    "issues/delete-comment",
    "issues/list-for-repo",
    "issues/create",
    "issues/update",
}
DISPATCH = {"actions/create-workflow-dispatch", "repos/create-dispatch-event"}


def description(cache: Path) -> Path:
    """The OpenAPI description, fetched once with `npm pack` and checked against INTEGRITY."""
    target = cache / "octokit-openapi-23.0.2" / "api.github.com.json"
    if target.is_file():
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed to fetch GitHub's OpenAPI description (apt install npm)")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [npm, "pack", PACKAGE, "--pack-destination", tmp, "--silent"],
            check=True,
            capture_output=True,
            timeout=300,
        )
        (tarball,) = Path(tmp).glob("*.tgz")
        digest = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
        if f"sha512-{digest}" != INTEGRITY:
            raise RuntimeError(f"{tarball.name} does not match the pinned integrity {INTEGRITY}")
        with tarfile.open(tarball) as archive:
            source = archive.extractfile(MEMBER)
            assert source is not None
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".part")
            partial.write_bytes(source.read())
            partial.replace(target)
    return target


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    operation: str | None
    status: int = 0


@dataclass
class Fault:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    message: str | None = None
    operation: str | None = None  # operationId it waits for; None: the next request


class OpenAPIStandIn:
    def __init__(self, spec_file: Path) -> None:
        from openapi_core import Config, OpenAPI

        self.spec = json.loads(spec_file.read_text())
        self.api = OpenAPI.from_dict(self.spec, config=Config(spec_validator_cls=None))
        self.routes = sorted(
            (
                (re.compile("^" + re.sub(r"\{[^}]+\}", "([^/]+)", template) + "$"), template)
                for template in self.spec["paths"]
            ),
            key=lambda route: route[1].count("{"),  # literal segments win over parameters
        )
        self.requests: list[Recorded] = []
        self.violations: list[str] = []
        self.comments: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.issues: dict[str, list[dict[str, Any]]] = {}
        self.dispatches: list[tuple[str, str, dict[str, Any]]] = []  # repo, operation, body
        self.faults: list[Fault] = []
        self.canned: dict[str, tuple[int, Any]] = {}  # operationId -> status, answer
        self.holds: dict[str, tuple[threading.Barrier, list[int]]] = {}  # operationId -> race
        self.befores: dict[str, Callable[[], None]] = {}  # operationId -> one-shot change
        self.heads: dict[tuple[str, int], str] = {}  # (repo, PR) -> head sha, for pulls/get
        self.ids = itertools.count(1001)
        self.lock = threading.Lock()
        self.url = ""

    # -- test API ---------------------------------------------------------------------------
    def fail_next(
        self,
        status: int,
        headers: dict[str, str] | None = None,
        *,
        operation: str | None = None,
        times: int = 1,
        message: str | None = None,
    ) -> None:
        """Answer the next request (of `operation`, when given) with `status`."""
        self.faults.extend(Fault(status, headers or {}, message, operation) for _ in range(times))

    def respond(self, operation: str, payload: Any, status: int = 200) -> None:
        """Answer every request of `operation` with `payload` (until reset) instead of the
        description's example. The answer is held to the operation's response schema."""
        self.canned[operation] = (status, payload)

    def hold(self, operation: str, parties: int = 2) -> None:
        """The next `parties` requests of `operation` each wait until all have arrived, then
        are answered: a race made certain (every racer reads the same state before any
        writes). A racer that never comes breaks the barrier after 60 s."""
        self.holds[operation] = (threading.Barrier(parties, timeout=60), [parties])

    def before(self, operation: str, change: Callable[[], None]) -> None:
        """Run `change` (e.g. a person deleting a comment) just before the next request of
        `operation` is answered: what happens between a client's two requests."""
        self.befores[operation] = change

    def reset(self) -> None:
        with self.lock:
            self.befores.clear()
            self.heads.clear()
            self.holds.clear()
            self.canned.clear()
            self.requests.clear()
            self.violations.clear()
            self.comments.clear()
            self.issues.clear()
            self.dispatches.clear()
            self.faults.clear()

    def issue_comments(self, repository: str, number: int) -> list[dict[str, Any]]:
        return self.comments.get((repository, number), [])

    def add_comment(self, repository: str, number: int, body: str, login: str = "octocat"):
        return self._new_comment(repository, number, body, login)

    # -- description helpers ----------------------------------------------------------------
    def resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            node = self._pointer(node["$ref"])
        return node

    def _pointer(self, ref: str) -> Any:
        node: Any = self.spec
        for part in ref.removeprefix("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        for pattern, template in self.routes:
            if pattern.match(path) and method.lower() in self.spec["paths"][template]:
                return template, self.spec["paths"][template][method.lower()]
        return None

    def example(self, operation: dict[str, Any], status: int) -> Any:
        response = self.resolve(operation["responses"].get(str(status), {}))
        media = (response.get("content") or {}).get("application/json") or {}
        for example in (media.get("examples") or {}).values():
            return json.loads(json.dumps(self.resolve(example)["value"]))
        return None

    # -- handling ---------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, headers: dict[str, str], raw: bytes):
        parts = urlsplit(raw_path)
        query = parse_qs(parts.query)
        body = json.loads(raw) if raw else None
        found = self.operation(method, parts.path)
        record = Recorded(
            method, parts.path, query, headers, body, found[1]["operationId"] if found else None
        )
        with self.lock:
            held = self.holds.get(record.operation or "")
            if held is not None and held[1][0] > 0:
                held[1][0] -= 1
            else:
                held = None
        if held is not None:
            held[0].wait()  # outside the lock: the other racers' requests come in meanwhile
        with self.lock:
            if (change := self.befores.pop(record.operation or "", None)) is not None:
                change()
            self.requests.append(record)
            status, out_headers, payload = self._answer(method, parts, headers, raw, body, found)
            record.status = status
        return status, out_headers, payload

    def _answer(self, method, parts, headers, raw, body, found):
        from openapi_core.testing import MockRequest, MockResponse

        if found is None:
            self.violations.append(f"{method} {parts.path}: no such operation in the description")
            return (
                404,
                {},
                {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"},
            )
        template, operation = found
        request = MockRequest(
            SERVER,
            method.lower(),
            parts.path,
            args={k: v[-1] for k, v in parse_qs(parts.query).items()},
            headers=headers,
            data=raw or None,
            content_type=headers.get("Content-Type", "application/json").split(";")[0],
        )
        result = self.api.unmarshal_request(request)
        if result.errors:
            detail = "; ".join(_explain(e) for e in result.errors)
            self.violations.append(f"{method} {parts.path} ({operation['operationId']}): {detail}")
            return (
                400,
                {},
                {
                    "message": f"request does not match the description: {detail}",
                    "documentation_url": "https://docs.github.com/rest",
                },
            )
        for name in ("Accept", "X-GitHub-Api-Version"):
            if name.lower() not in {k.lower() for k in headers}:
                self.violations.append(f"{method} {parts.path}: no {name} header")
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if auth != f"Bearer {VALID_TOKEN}":
            return (
                401,
                {},
                {
                    "message": "Bad credentials",
                    "documentation_url": "https://docs.github.com/rest",
                    "status": "401",
                },
            )
        for fault in self.faults:
            if fault.operation in (None, operation["operationId"]):
                self.faults.remove(fault)
                return self._fault(fault, operation)
        status, out_headers, payload = self._operate(
            operation["operationId"],
            result.parameters.path,
            result.parameters.query,
            body,
            operation,
        )
        if operation["operationId"] in DISPATCH or status == 204:
            return status, out_headers, payload  # 204: no content to check
        response = MockResponse(
            json.dumps(payload).encode(),
            status_code=status,
            headers=out_headers,
            content_type="application/json",
        )
        # Answers the stand-in builds from its own state are held to the response schema; the
        # description's examples are answered as they are (some, e.g. users/get-by-username,
        # lack a property their own schema requires).
        checked = self.api.unmarshal_response(request, response)
        checked_ids = STATEFUL | set(self.canned)
        # GitHub answers 404 for a resource that is gone on every route, also where the
        # description declares no 404 (PATCH or DELETE of a deleted comment)
        declared = status != 404 or str(status) in operation["responses"]
        if operation["operationId"] in checked_ids and declared and checked.errors:
            self.violations.append(
                f"stand-in answer to {operation['operationId']}: "
                + "; ".join(_explain(e) for e in checked.errors)
            )
        return status, out_headers, payload

    def _fault(self, fault: Fault, operation: dict[str, Any]):
        # GitHub answers 401, 403, 429 and 5xx on any endpoint (credentials, rate limits,
        # outages); other statuses only where the description declares them.
        anywhere = {401, 403, 429, 500, 502, 503, 504}
        if fault.status in anywhere or str(fault.status) in operation["responses"]:
            message = fault.message or {
                401: "Bad credentials",
                403: "Resource not accessible by integration",
                404: "Not Found",
                410: "Issues are disabled for this repo",
                422: "Validation Failed",
                429: "You have exceeded a secondary rate limit.",
            }.get(fault.status, "Server Error")
            payload: dict[str, Any] = {
                "message": message,
                "documentation_url": "https://docs.github.com/rest",
            }
            if fault.status == 422:
                payload["errors"] = [
                    {
                        "resource": "IssueComment",
                        "field": "body",
                        "code": "custom",
                        "message": "Body is too long",
                    }
                ]
            return fault.status, fault.headers, payload
        raise AssertionError(f"{operation['operationId']} declares no {fault.status} response")

    def _operate(self, operation_id, path, query, body, operation):
        repo = f"{path.get('owner')}/{path.get('repo')}"
        if operation_id in self.canned:
            status, payload = self.canned[operation_id]
            return status, {}, json.loads(json.dumps(payload))
        if operation_id in DISPATCH:
            self.dispatches.append((repo, operation_id, {**path, **(body or {})}))
            return 204, {}, None
        if operation_id == "pulls/get" and (repo, int(path["pull_number"])) in self.heads:
            pull = self.example(operation, 200)  # the description's example, this PR's head
            pull["number"] = int(path["pull_number"])
            pull["head"]["sha"] = self.heads[(repo, int(path["pull_number"]))]
            return 200, {}, pull
        if operation_id == "issues/list-for-repo":
            items = [
                i
                for i in self.issues.get(repo, [])
                if query.get("state", "open") in ("all", i["state"])
                and all(
                    label in {x["name"] for x in i["labels"]}
                    for label in filter(None, str(query.get("labels") or "").split(","))
                )
            ]
            per_page, page = int(query.get("per_page", 30)), int(query.get("page", 1))
            return 200, {}, items[(page - 1) * per_page : page * per_page]
        if operation_id == "issues/create":
            issue = self.example(operation, 201)
            number = len(self.issues.get(repo, [])) + 1
            issue.update(
                id=next(self.ids),
                number=number,
                title=body["title"],
                body=body.get("body"),
                state="open",
                labels=[
                    {**issue["labels"][0], "name": name} if issue.get("labels") else {"name": name}
                    for name in body.get("labels") or []
                ],
                url=f"{SERVER}/repos/{repo}/issues/{number}",
                html_url=f"https://github.com/{repo}/issues/{number}",
                created_at=_now(),
                updated_at=_now(),
            )
            issue.pop("pull_request", None)
            self.issues.setdefault(repo, []).append(issue)
            return 201, {"Location": issue["url"]}, issue
        if operation_id == "issues/update":
            for issue in self.issues.get(repo, []):
                if issue["number"] == int(path["issue_number"]):
                    issue.update(
                        {k: v for k, v in (body or {}).items() if k in {"title", "body", "state"}}
                    )
                    issue["updated_at"] = _now()
                    return 200, {}, issue
            return (
                404,
                {},
                {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"},
            )
        if operation_id == "issues/list-comments":
            key = (f"{path['owner']}/{path['repo']}", int(path["issue_number"]))
            items = self.comments.get(key, [])
            per_page, page = int(query.get("per_page", 30)), int(query.get("page", 1))
            chunk = items[(page - 1) * per_page : page * per_page]
            headers = {}
            if page * per_page < len(items):
                base = f"{self.url}/repos/{key[0]}/issues/{key[1]}/comments"
                headers["Link"] = f'<{base}?per_page={per_page}&page={page + 1}>; rel="next"'
            return 200, headers, chunk
        if operation_id == "issues/create-comment":
            repo = f"{path['owner']}/{path['repo']}"
            comment = self._new_comment(
                repo, int(path["issue_number"]), body["body"], "github-actions[bot]"
            )
            return 201, {"Location": comment["url"]}, comment
        if operation_id == "issues/delete-comment":
            for comments in self.comments.values():
                for comment in comments:
                    if comment["id"] == int(path["comment_id"]):
                        comments.remove(comment)
                        return 204, {}, None
            return (
                404,
                {},
                {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"},
            )
        if operation_id == "issues/update-comment":
            for comment in itertools.chain.from_iterable(self.comments.values()):
                if comment["id"] == int(path["comment_id"]):
                    comment["body"] = body["body"]
                    comment["updated_at"] = _now()
                    return 200, {}, comment
            return (
                404,
                {},
                {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"},
            )
        for status in sorted(operation["responses"]):  # anything else: the first 2xx example
            if status.startswith("2"):
                return int(status), {}, self.example(operation, int(status))
        raise AssertionError(f"{operation_id} has no 2xx response")

    def _new_comment(self, repository: str, number: int, body: str, login: str) -> dict:
        comment = self.example(
            self.spec["paths"]["/repos/{owner}/{repo}/issues/{issue_number}/comments"]["post"], 201
        )
        cid = next(self.ids)
        comment.update(
            id=cid,
            body=body,
            url=f"{SERVER}/repos/{repository}/issues/comments/{cid}",
            html_url=f"https://github.com/{repository}/pull/{number}#issuecomment-{cid}",
            issue_url=f"{SERVER}/repos/{repository}/issues/{number}",
            created_at=_now(),
            updated_at=_now(),
        )
        comment["user"]["login"] = login
        self.comments.setdefault((repository, number), []).append(comment)
        return comment


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _explain(error: Exception) -> str:
    causes = [error, error.__cause__]
    parts = [str(c) for c in causes if c is not None and str(c)]
    for cause in causes:
        for schema_error in getattr(cause, "schema_errors", ()) or ():
            parts.append(getattr(schema_error, "message", str(schema_error)))
    return " / ".join(parts) or type(error).__name__


@contextmanager
def serve(stand_in: OpenAPIStandIn) -> Iterator[OpenAPIStandIn]:
    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            status, headers, payload = stand_in.handle(
                self.command, self.path, dict(self.headers.items()), raw
            )
            data = b"" if status == 204 else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    stand_in.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stand_in
    finally:
        server.shutdown()
        server.server_close()


# -- Scripted answers of the Environment and the run's approvals (deploy's approval check) ----
ENVIRONMENT_PATH = "/repos/{owner}/{repo}/environments/{environment_name}"
APPROVALS_PATH = "/repos/{owner}/{repo}/actions/runs/{run_id}/approvals"


def environment_answer(
    stand_in: OpenAPIStandIn, name: str, reviewers: list[str] | None
) -> dict[str, Any]:
    """GET .../environments/NAME as GitHub answers it: the description's example, renamed,
    with one required_reviewers rule naming `reviewers` (users), or none when None/empty."""
    answer = stand_in.example(stand_in.spec["paths"][ENVIRONMENT_PATH]["get"], 200)
    rules = [r for r in answer["protection_rules"] if r["type"] == "branch_policy"]
    if reviewers:
        [rule] = [r for r in answer["protection_rules"] if r["type"] == "required_reviewers"]
        [user] = [r for r in rule["reviewers"] if r["type"] == "User"]
        rule["reviewers"] = [
            {"type": "User", "reviewer": {**user["reviewer"], "login": login, "id": i}}
            for i, login in enumerate(reviewers, start=1)
        ]
        rules.append(rule)
    answer.update(name=name, protection_rules=rules)
    return answer


def approvals_answer(
    stand_in: OpenAPIStandIn, reviews: list[tuple[str, str, str]]
) -> list[dict[str, Any]]:
    """GET .../actions/runs/ID/approvals: one review per (login, state, Environment name)."""
    [example] = stand_in.example(stand_in.spec["paths"][APPROVALS_PATH]["get"], 200)
    answers = []
    for login, state, environment in reviews:
        review = json.loads(json.dumps(example))
        review["state"] = state
        review["user"]["login"] = login
        review["environments"][0]["name"] = environment
        answers.append(review)
    return answers

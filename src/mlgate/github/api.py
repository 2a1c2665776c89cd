"""A small GitHub REST client: requests with urllib3 retries that honour GitHub's rate limits.

Transient failures (connection errors, 500/502/503/504) are retried with exponential backoff
for idempotent methods. Rate-limited responses (429, or 403 with `x-ratelimit-remaining: 0` or
`retry-after`) are retried for every method, POST included, because GitHub did not act on
them; the wait is `retry-after`, else until `x-ratelimit-reset`. A wait longer than `max_wait`
is not slept through: the call fails at once and says when the limit resets. Every other error
becomes a `GitHubError` naming the fix.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from mlgate import __version__
from mlgate.errors import GitHubError

API_VERSION = "2022-11-28"
RATE_LIMITED = frozenset({403, 429})
TRANSIENT = frozenset({500, 502, 503, 504})


def rate_limit_wait(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds GitHub asks us to wait before retrying, or None when the response is not a
    rate limit. `retry-after` (secondary limits) wins over `x-ratelimit-reset` (primary)."""
    lower = {k.lower(): v for k, v in headers.items()}
    if (after := lower.get("retry-after", "").strip()).isdigit():
        return float(after)
    if lower.get("x-ratelimit-remaining") == "0" and lower.get("x-ratelimit-reset", "").isdigit():
        now = time.time() if now is None else now
        return max(0.0, int(lower["x-ratelimit-reset"]) - now) + 1.0  # the reset second itself
    return None


class GitHubRetry(Retry):
    """urllib3 Retry that tells a rate limit from a permission error on 403 and never retries
    a POST that GitHub may have acted on."""

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if method.upper() == "POST" and status_code not in RATE_LIMITED:
            return False  # a 5xx after a POST may still have created the comment
        return super().is_retry(method, status_code, has_retry_after)

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, **kw):  # type: ignore[no-untyped-def,override]
        if response is not None and response.status in RATE_LIMITED:
            wait = rate_limit_wait(response.headers)
            if wait is None and response.status == 403:
                raise MaxRetryError(_pool, url, "403 is not a rate limit")  # type: ignore[arg-type]
            if wait is not None and wait > self.retry_after_max:
                raise MaxRetryError(_pool, url, f"rate limit resets in {wait:.0f} s")  # type: ignore[arg-type]
        return super().increment(method, url, response, error, _pool, **kw)

    def get_retry_after(self, response: Any) -> float | None:
        return rate_limit_wait(response.headers)


PR_PERMISSIONS = (
    "the commenting job needs `permissions: pull-requests: write` (a caller's `permissions:` "
    "caps what the PR gate's jobs get); pull requests from forks only get a read-only token. "
    "The PR gate's check, the `mlgate gate` job, does not depend on the comment"
)


class GitHubAPI:
    """`GitHubAPI(api_url, token)`; `request()` returns parsed JSON or raises GitHubError."""

    def __init__(
        self,
        api_url: str,
        token: str | None,
        *,
        retries: int = 5,
        backoff: float = 1.0,
        max_wait: float = 90.0,
        timeout: float = 30.0,
        permission_hint: str = PR_PERMISSIONS,
    ) -> None:
        if not token:
            raise GitHubError(
                "no GitHub token (GITHUB_TOKEN is empty)",
                fix="pass the workflow token: env GITHUB_TOKEN: ${{ github.token }}",
            )
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        self.max_wait = max_wait
        self.permission_hint = permission_hint
        retry = GitHubRetry(
            total=retries,
            backoff_factor=backoff,
            status_forcelist=RATE_LIMITED | TRANSIENT,
            allowed_methods=frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE", "POST"}),
            respect_retry_after_header=True,
            retry_after_max=max_wait,  # type: ignore[arg-type]  # a float works: compared only
            raise_on_status=False,
        )
        self.session = requests.Session()
        self.session.mount("https://", HTTPAdapter(max_retries=retry))
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.headers.update(
            {
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {token}",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": f"mlgate/{__version__}",
            }
        )

    def request(
        self, method: str, path: str, *, allow: frozenset[int] = frozenset(), **kwargs: Any
    ) -> requests.Response:
        """The response; a status >= 400 raises GitHubError unless it is in `allow` (e.g. a 404
        the caller handles: a comment deleted meanwhile)."""
        url = path if path.startswith(("http://", "https://")) else self.api_url + path
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise GitHubError(
                f"GitHub API at {self.api_url} unreachable ({method} {_route(url, self.api_url)}): "
                f"{type(exc).__name__}",
                fix="check GITHUB_API_URL and the runner's network; transient errors were "
                "already retried with backoff",
            ) from exc
        if response.status_code >= 400 and response.status_code not in allow:
            raise _error(
                method, _route(url, self.api_url), response, self.max_wait, self.permission_hint
            )
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def paginate(self, path: str, per_page: int = 100) -> Iterator[dict[str, Any]]:
        """Every item of a list endpoint, following the `Link: rel="next"` headers."""
        url: str | None = path
        params: dict[str, Any] | None = {"per_page": per_page}
        while url:
            response = self.request("GET", url, params=params)
            yield from response.json()
            url, params = response.links.get("next", {}).get("url"), None

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> GitHubAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _route(url: str, base: str) -> str:
    return url.removeprefix(base).split("?")[0]


def _error(
    method: str, route: str, response: requests.Response, max_wait: float, permission_hint: str
) -> GitHubError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    status = response.status_code
    said = body.get("message") or response.reason or ""
    details = "; ".join(
        e.get("message") or f"{e.get('field')} {e.get('code')}"
        for e in body.get("errors") or []
        if isinstance(e, dict)
    )
    what = f"GitHub answered {status} to {method} {route}: {said}" + (
        f" ({details})" if details else ""
    )
    wait = rate_limit_wait(response.headers)
    if status in RATE_LIMITED and wait is not None:
        reset = datetime.fromtimestamp(time.time() + wait, UTC).isoformat(timespec="seconds")
        return GitHubError(
            f"{what}; the rate limit resets at {reset}",
            fix=f"re-run after the reset (mlgate waits up to {max_wait:.0f} s on its own); "
            "a GitHub App or fewer parallel jobs raise the budget",
        )
    fixes = {
        401: "the token is invalid or expired: pass the workflow's own token "
        "(env GITHUB_TOKEN: ${{ github.token }})",
        403: f"the token lacks a permission: {permission_hint}",
        404: "check the repository and pull request number; a token that cannot see a private "
        "repository also gets 404",
        410: "issues are disabled on this repository: enable them, since PR comments are issue "
        "comments",
        422: "GitHub refused the content: see the message above",
    }
    fix = fixes.get(status, "see GitHub's message above; transient errors were already retried")
    if doc := body.get("documentation_url"):
        fix += f" ({doc})"
    return GitHubError(what, fix=fix)

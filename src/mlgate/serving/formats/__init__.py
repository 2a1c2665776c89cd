"""The request formats the model server speaks, one module each, and the registry the app routes
by: (route, content type) → Format (mlgate.serving.formats.base). A format module imports the
shared checks (mlgate.serving.matrix), the bundle and `base`, never another format module (a test
checks it). Adding a format: a module with `FORMAT = Format(name, parse, render)`, one entry here.
"""

from __future__ import annotations

from mlgate.serving.formats import csv, mlflow_json, oip
from mlgate.serving.formats.base import Format

# Routes are the metrics' route labels. The order of content types is the order a 415 lists them;
# "" is a request without a Content-Type (tritonclient sends none).
FORMATS: dict[tuple[str, str], Format] = {
    ("invocations", "application/json"): mlflow_json.FORMAT,
    ("invocations", "text/csv"): csv.FORMAT,
    ("v2_infer", "application/json"): oip.FORMAT,
    ("v2_infer", "application/octet-stream"): oip.FORMAT,
    ("v2_infer", ""): oip.FORMAT,
}


def content_types(route: str) -> list[str]:
    """The content types `route` accepts, in the registry's order."""
    return [kind for (r, kind) in FORMATS if r == route]

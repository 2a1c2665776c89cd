"""What a request format is: `parse` a request into a checked matrix (with whatever the answer
needs), then `render` the probabilities as the format's response. The app picks the format by
route and content type (mlgate.serving.formats.FORMATS), scores the matrix and sends the response.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from mlgate.serving.bundle import Bundle
from mlgate.serving.matrix import Matrices

Headers = list[tuple[bytes, bytes]]
Response = tuple[int, bytes, Headers]
JSON_HEADERS: Headers = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class Request:
    """What a format sees of a request (picklable: large bodies go to the scoring process)."""

    body: bytes
    content_type: str = ""  # lower case, without parameters; "" when none was sent
    headers: Mapping[bytes, bytes] = field(default_factory=dict)  # names in lower case
    query: Mapping[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Parsed:
    matrix: np.ndarray  # checked by Matrices.matrix: float64, the model's columns
    context: Any = None  # what `render` needs of the request (e.g. the outputs asked for)


@dataclass(frozen=True)
class Format:
    name: str
    parse: Callable[[Request, Matrices], Parsed]
    render: Callable[[Parsed, np.ndarray, Bundle], Response]


def predictions(parsed: Parsed, proba: np.ndarray, bundle: Bundle) -> Response:
    """MLflow's answer (its JSON and CSV formats): `{"predictions": [...]}`, the positive
    class's probability, with `"labels"` at the model's threshold when `parsed.context` asks."""
    out: dict[str, Any] = {"predictions": proba}
    if parsed.context:
        out["labels"] = (proba >= bundle.threshold).astype(np.int64)
    return 200, orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY), JSON_HEADERS


def wants_labels(request: Request) -> bool:
    """MLflow's `?labels=true` (or 1, yes): answer the labels too."""
    return request.query.get("labels", ["false"])[-1].lower() in {"1", "true", "yes"}

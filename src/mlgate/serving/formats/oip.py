"""The Open Inference Protocol v2 (KServe, Triton): `POST /v2/models/{name}[/versions/{v}]/infer`
as JSON, or as the binary tensor extension both ways (a JSON header of
Inference-Header-Content-Length bytes, then raw little-endian tensors: tritonclient's and
KServe's defaults); one [rows, features] input or one input per feature. Also the bodies of the
server metadata (`/v2`), the model configuration (`.../config`) and repository index endpoints.

`read_json` is the one place the JSON (or the binary request's JSON header) is decoded: a faster
reader hooks in there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mlgate.serving import fastjson
from mlgate.serving.bundle import Bundle
from mlgate.serving.formats.base import JSON_HEADERS, Format, Headers, Parsed, Request, Response
from mlgate.serving.matrix import BadRequest, Limits, Matrices, parse_json, short

OIP_NUMERIC = {
    "FP16",
    "FP32",
    "FP64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
}
# OIP's binary tensor extension: raw little-endian values, row-major, after the JSON header.
BINARY_DTYPES = {
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
}
HEADER_LENGTH = b"inference-header-content-length"
EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository"]


def read_json(body: bytes, bundle: Bundle) -> Any:
    """The request's JSON (the whole body, or the binary request's header): the payload that
    `parse` reads. A big body's one input comes back with `data` as a flat numpy array
    (mlgate.serving.fastjson, numbers read without Python lists); anything else is orjson's."""
    return fastjson.oip(body, bundle) or parse_json(body)


@dataclass(frozen=True)
class Answer:
    """What the response needs of the request."""

    requested: dict[str, bool | None]  # output name: its binary_data parameter
    all_binary: bool  # parameters.binary_data_output
    id: Any  # the request's id, echoed; None when it sent none
    has_id: bool


def parse(request: Request, checks: Matrices) -> Parsed:
    """An OIP v2 inference: JSON, or a JSON header of Inference-Header-Content-Length bytes
    followed by binary tensors (OIP's binary tensor extension)."""
    body = request.body
    header_length = _header_length(request.headers, len(body))
    if request.content_type == "application/octet-stream" and header_length is None:
        raise BadRequest(
            "an application/octet-stream body needs the Inference-Header-Content-Length "
            "header (OIP binary tensor extension); send JSON as application/json",
            400,
        )
    head = body if header_length is None else body[:header_length]
    payload = read_json(head, checks.bundle)
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise BadRequest('the body must be {"inputs": [{"name", "shape", "datatype", "data"}]}')
    tensors = payload["inputs"]
    if not tensors:
        raise BadRequest("inputs is empty; send one [rows, features] input or one per feature")
    binary = memoryview(body)[header_length:] if header_length is not None else None
    offset = 0
    values: list[Any] = []
    for t in tensors:
        if not isinstance(t, dict) or not {"name", "shape", "datatype"} <= t.keys():
            raise BadRequest("each input needs name, shape, datatype and data")
        if not isinstance(t["name"], str) or not isinstance(t["datatype"], str):
            raise BadRequest(
                f"input name {short(t['name'])} / datatype {short(t['datatype'])}: "
                "name and datatype must be strings"
            )
        if t["datatype"] not in OIP_NUMERIC and not (
            t["datatype"] == "BYTES" and checks.bundle.categories  # category text (issue 19)
        ):
            raise BadRequest(
                f"input '{t['name']}': datatype {t['datatype']} is not numeric; "
                "use FP64, FP32 or an integer type"
            )
        shape = _shape(t)
        size = _binary_size(t)
        if size is None:
            if "data" not in t:
                raise BadRequest(
                    f"input '{t['name']}' has neither data nor parameters.binary_data_size"
                )
            values.append(_flat(t))
            continue
        if binary is None or offset + size > len(binary):
            raise BadRequest(
                f"input '{t['name']}': binary_data_size {size} runs past the body's "
                "binary part (Inference-Header-Content-Length names the JSON header's length)"
            )
        dtype = np.dtype(BINARY_DTYPES[t["datatype"]])
        if size != math.prod(shape) * dtype.itemsize:
            raise BadRequest(
                f"input '{t['name']}': binary_data_size {size} is not shape {shape} of "
                f"{t['datatype']} ({math.prod(shape) * dtype.itemsize} bytes)"
            )
        values.append(np.frombuffer(binary[offset : offset + size], dtype=dtype))
        offset += size
    if binary is not None and offset != len(binary):
        raise BadRequest(
            f"the body has {len(binary) - offset} bytes after the binary inputs; "
            "binary_data_size of each input must add up to the binary part"
        )
    features = checks.features
    if len(tensors) == 1:
        t = tensors[0]
        shape = _shape(t)
        if len(shape) != 2 or shape[1] != len(features):
            raise BadRequest(
                f"input '{t['name']}' has shape {shape}; one input carries "
                f"[rows, {len(features)}] (features in the order of /v2/models/"
                f"{checks.bundle.name}), or send one input per feature"
            )
        matrix = checks.matrix(values[0], f"input '{t['name']}'", shape=shape)
    else:
        names = [t["name"] for t in tensors]
        checks.check_columns(names, "inputs")  # a repeated name is refused, not overwritten
        by_name = dict(zip(names, zip(tensors, values, strict=True), strict=True))
        columns = []
        for name in features:
            tensor, data = by_name[name]
            shape = _shape(tensor)
            if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
                raise BadRequest(f"input '{name}' has shape {shape}; use [rows] or [rows, 1]")
            columns.append(data)
        if len({len(c) for c in columns}) != 1:
            raise BadRequest("every input must have the same number of rows")
        matrix = checks.matrix(columns, "inputs", by_column=True)
    requested = _outputs(payload.get("outputs"))  # checked before scoring: nothing half done
    params = payload.get("parameters")
    all_binary = isinstance(params, dict) and params.get("binary_data_output") is True
    return Parsed(matrix, Answer(requested, all_binary, payload.get("id"), "id" in payload))


def render(parsed: Parsed, proba: np.ndarray, bundle: Bundle) -> Response:
    """The outputs asked for (probability by default, label), each as JSON data or, when asked
    (`binary_data`, `binary_data_output`), as raw bytes after the JSON header."""
    answer: Answer = parsed.context
    requested = answer.requested
    outputs = []
    if not requested or "probability" in requested:
        outputs.append(("probability", "FP64", proba))
    if "label" in requested:
        outputs.append(("label", "INT64", (proba >= bundle.threshold).astype(np.int64)))
    described, blobs = [], []
    for name, datatype, array in outputs:
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": [len(array)]}
        binary = requested.get(name)
        if binary if binary is not None else answer.all_binary:
            raw = array.astype(BINARY_DTYPES[datatype], copy=False).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            tensor["data"] = array
        described.append(tensor)
    out: dict[str, Any] = {
        "model_name": bundle.name,
        "model_version": bundle.version,
        "outputs": described,
    }
    if answer.has_id:
        out["id"] = answer.id
    header = orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return 200, header, JSON_HEADERS
    headers: Headers = [
        (b"content-type", b"application/octet-stream"),
        (HEADER_LENGTH, str(len(header)).encode()),
    ]
    return 200, b"".join([header, *blobs]), headers


FORMAT = Format("oip", parse, render)


# -- the other OIP bodies ------------------------------------------------------------------------
def server_metadata(bundle: Bundle) -> dict[str, Any]:
    """GET /v2."""
    return {"name": "mlgate", "version": bundle.mlgate_version, "extensions": EXTENSIONS}


def repository_index(bundle: Bundle) -> list[dict[str, Any]]:
    """Triton's model repository extension: the one model this server serves."""
    return [{"name": bundle.name, "version": bundle.version, "state": "READY"}]


def config(bundle: Bundle, limits: Limits) -> dict[str, Any]:
    """The model's configuration as Triton's model configuration extension shapes it
    (`tritonclient.http.InferenceServerClient.get_model_config`)."""
    features = len(bundle.features)
    return {
        "name": bundle.name,
        "platform": "mlgate",
        "backend": bundle.trees.engine,
        "version_policy": {"specific": {"versions": [bundle.version]}},
        "max_batch_size": limits.max_rows,
        "input": [
            {"name": "input-0", "data_type": "TYPE_FP64", "dims": [features]},
            *({"name": f, "data_type": "TYPE_FP64", "dims": [1]} for f in bundle.features),
        ],
        "output": [
            {"name": "probability", "data_type": "TYPE_FP64", "dims": [1]},
            {"name": "label", "data_type": "TYPE_INT64", "dims": [1]},
        ],
        "parameters": {
            "threshold": {"string_value": repr(bundle.threshold)},
            "features": {"string_value": ",".join(bundle.features)},
        },
    }


# -- helpers -------------------------------------------------------------------------------------
def _header_length(headers: Any, size: int) -> int | None:
    raw = headers.get(HEADER_LENGTH)
    if raw is None:
        return None
    if not raw.isdigit() or not 0 < int(raw) <= size:
        raise BadRequest(
            f"Inference-Header-Content-Length {short(raw.decode('latin-1'))} is not a "
            f"length between 1 and the body's {size} bytes"
        )
    return int(raw)


def _outputs(outputs: Any) -> dict[str, bool | None]:
    """The requested outputs' names, each with its `binary_data` parameter (None when not
    given)."""
    if outputs is None:
        return {}
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise BadRequest('outputs must be a list of {"name": "probability"} or {"name": "label"}')
    requested: dict[str, bool | None] = {}
    for o in outputs:
        params = o.get("parameters")
        binary = params.get("binary_data") if isinstance(params, dict) else None
        requested[o["name"]] = binary if isinstance(binary, bool) else None
    unknown = requested.keys() - {"probability", "label"}
    if unknown:
        raise BadRequest(f"unknown outputs {sorted(unknown)}; this model has probability, label")
    return requested


def _shape(tensor: dict[str, Any]) -> list[int]:
    shape = tensor["shape"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise BadRequest(f"input '{tensor['name']}': shape must be a list of sizes")
    return shape


def _binary_size(tensor: dict[str, Any]) -> int | None:
    """The input's `parameters.binary_data_size` (binary tensor extension), or None."""
    params = tensor.get("parameters")
    if params is None:
        return None
    if not isinstance(params, dict):
        raise BadRequest(f"input '{tensor['name']}': parameters must be an object")
    size = params.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadRequest(
            f"input '{tensor['name']}': binary_data_size must be a byte count, got {short(size)}"
        )
    return size


def _flat(tensor: dict[str, Any]) -> Any:
    """The input's data as a flat list of its values (a flat numpy array from a faster
    `read_json` passes as it is), as many as its shape names."""
    data = tensor["data"]
    if isinstance(data, np.ndarray) and data.ndim == 1:
        flat: Any = data
    elif not isinstance(data, list):
        raise BadRequest(f"input '{tensor['name']}': data must be a list")
    else:
        flat = (
            data
            if not data or not isinstance(data[0], list)
            else np.asarray(data, dtype=object).ravel().tolist()
        )
    expected = math.prod(_shape(tensor))
    if len(flat) != expected:
        raise BadRequest(
            f"input '{tensor['name']}': {len(flat)} values for shape {tensor['shape']} ({expected})"
        )
    return flat

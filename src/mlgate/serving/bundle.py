"""The serving bundle: what the image bakes in, exported from a registered model version.

A directory with the booster (`model.ubj`, the file MLflow logged, byte for byte), the same
trees compiled to C (`model.so`, see mlgate.serving.trees) and `bundle.json` (schema version 1): model
name and version, run id, data md5, commit, the input columns in signature order, the decision
threshold, the mlgate version, and the compiled library's digest, compiler and parity check.
Exporting (mlgate.pipeline.export) needs MLflow, tl2cgen and a C compiler; loading needs only numpy
(and xgboost for a bundle without compiled trees), so the serving image carries neither.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlgate import __version__
from mlgate.errors import ConfigError, ModelError
from mlgate.files import write_json_atomic
from mlgate.serving.trees import LIBRARY, BoosterTrees, CompiledTrees, Trees, compile_trees

SCHEMA_VERSION = 1
MODEL_FILE = "model.ubj"
META_FILE = "bundle.json"


@dataclass(frozen=True)
class Bundle:
    name: str
    version: str
    run_id: str
    features: list[str]
    threshold: float
    data_md5: str
    commit: str
    model_sha256: str
    mlgate_version: str
    trees: Trees  # compiled (model.so) or the booster
    # Categorical features: {name: [category, ...]}; category i is sent to the trees as code i
    categories: dict[str, list[str]] = field(default_factory=dict)
    classes: dict[str, str] = field(default_factory=dict)  # {"1": positive, "0": negative}

    def predict(self, matrix: Any) -> Any:
        return self.trees.predict(matrix)

    def describe(self) -> dict[str, Any]:
        """GET /version: what is served, and where it came from."""
        return {
            "model": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "data_md5": self.data_md5,
            "commit": self.commit,
            "model_sha256": self.model_sha256,
            "threshold": self.threshold,
            **({"labels": self.classes} if self.classes else {}),
            "mlgate": self.mlgate_version,
            "engine": self.trees.engine,
            "inputs": [
                {"name": f, "type": "category", "categories": self.categories[f]}
                if f in self.categories
                else {"name": f, "type": "double"}
                for f in self.features
            ],
        }

    def v2_metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "xgboost",
            "inputs": [
                {"name": f, "datatype": "BYTES" if f in self.categories else "FP64", "shape": [-1]}
                for f in self.features
            ],
            "outputs": [
                {"name": "probability", "datatype": "FP64", "shape": [-1]},
                {"name": "label", "datatype": "INT64", "shape": [-1]},
            ],
            "parameters": {"threshold": self.threshold, "run_id": self.run_id},
        }


def check_expected(bundle: Bundle, expected: str | None) -> None:
    """Refuse a bundle whose booster is not the one the image was built for (serve.model_sha256,
    from the build argument the image's label also carries). `load_bundle` proves the model
    file matches bundle.json; this proves bundle.json is the image's own: an image derived from
    a verified one with another bundle copied over /model (labels and this setting inherited)
    does not start."""
    if expected and bundle.model_sha256 != expected:
        raise ModelError(
            f"the bundle holds {bundle.name} version {bundle.version} with booster sha256 "
            f"{bundle.model_sha256[:12]}, but this image was built for {expected[:12]} "
            "(serve.model_sha256, its label dev.mlgate.model.sha256): its model was replaced "
            "after the build; refusing to serve it",
            fix="deploy by digest the image `mlgate deploy` recorded (mlgate.image.digest); find "
            "out who pushed this one",
        )


def load_bundle(path: Path, threads: int | None = None) -> Bundle:
    meta_file, model_file = path / META_FILE, path / MODEL_FILE
    if not meta_file.is_file() or not model_file.is_file():
        raise ConfigError(
            f"{path} is not a model bundle (no {META_FILE} or {MODEL_FILE})",
            fix="export one with `mlgate bundle --version N --out DIR`, or point "
            "serve.bundle (MLGATE_SERVE_BUNDLE) at one",
        )
    meta = json.loads(meta_file.read_text())
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise ConfigError(
            f"{meta_file}: schema_version {meta.get('schema_version')} is not {SCHEMA_VERSION}",
            fix="re-export the bundle with this mlgate",
        )
    raw = model_file.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != meta["model_sha256"]:
        raise ModelError(
            f"{model_file} does not match the sha256 recorded in {META_FILE}",
            fix="re-export the bundle; the model file was changed or truncated",
        )
    compiled = meta.get("compiled")
    if compiled:
        library = path / compiled.get("file", LIBRARY)
        if not library.is_file() or (
            hashlib.sha256(library.read_bytes()).hexdigest() != compiled.get("sha256")
        ):
            raise ModelError(
                f"{library} is missing or does not match the sha256 recorded in {META_FILE}",
                fix="re-export the bundle; the compiled trees were changed or lost",
            )
        trees: Trees = CompiledTrees(library, len(meta["features"]), threads)
    else:
        booster = BoosterTrees.from_bytes(raw, threads)
        if booster.booster.num_features() != len(meta["features"]):
            raise ModelError(
                f"the booster takes {booster.booster.num_features()} features, the bundle "
                f"lists {len(meta['features'])}",
                fix="re-export the bundle",
            )
        trees = booster
    return Bundle(
        name=meta["name"],
        version=str(meta["version"]),
        run_id=meta["run_id"],
        features=list(meta["features"]),
        threshold=float(meta["threshold"]),
        data_md5=meta.get("data_md5", ""),
        commit=meta.get("commit", ""),
        model_sha256=digest,
        mlgate_version=meta.get("mlgate_version", __version__),
        trees=trees,
        categories={str(k): [str(c) for c in v] for k, v in (meta.get("categories") or {}).items()},
        classes={str(k): str(v) for k, v in (meta.get("classes") or {}).items()},
    )


def write_bundle(
    dest: Path,
    raw_model: bytes,
    *,
    compile: bool = True,
    compiler: str = "cc",
    example: Any = None,
    **meta: Any,
) -> dict[str, Any]:
    """Write `dest` (replaced) from the booster's bytes and its metadata, with the trees
    compiled (unless `compile` is false). A failed compile or parity check leaves `dest` as
    it was."""
    meta = {
        "schema_version": SCHEMA_VERSION,
        **meta,
        "model_sha256": hashlib.sha256(raw_model).hexdigest(),
        "mlgate_version": __version__,
    }
    with tempfile.TemporaryDirectory(prefix="mlgate-bundle-") as tmp:
        if compile:
            meta["compiled"] = compile_trees(
                raw_model, Path(tmp), compiler=compiler, extra_rows=example
            )
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        (dest / MODEL_FILE).write_bytes(raw_model)
        if compile:
            shutil.copy2(Path(tmp) / LIBRARY, dest / LIBRARY)
    write_json_atomic(dest / META_FILE, meta)
    for path in (dest, *dest.iterdir()):  # the server runs as another user
        path.chmod(0o755 if path.is_dir() else 0o644)
    return meta


# ---- Categorical features at serving (issue 19) ----


def category_text(value: Any) -> str:
    """A request's category value as text, as training recorded the categories (an integral
    JSON number 2 or 2.0 is the category "2")."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class CategoryError(ValueError):
    """A request value the bundle's categorical encoding refuses; the message names the
    column."""


def encode_json(
    bundle: Bundle,
    data: Any,
    *,
    columns: list[Any] | None = None,
    by_column: bool = False,
    width: int | None = None,
    allow_missing: bool = False,
) -> Any:
    """Replace the categories in request data (JSON rows, columns or a flat tensor of `width`
    values a row) with their codes. A category the model never saw is scored as missing
    (NaN), which serve.allow_missing=false refuses, naming the column. Data of another shape
    is returned as it is, for the server's own checks to refuse."""
    if not bundle.categories or not isinstance(data, list):
        return data
    names = bundle.features
    if width is not None:  # OIP v2, one tensor [rows, width], flattened row by row
        return [
            _code(bundle, names[k % width], v, allow_missing) if k % width < len(names) else v
            for k, v in enumerate(data)
        ]
    if by_column:
        return [
            [_code(bundle, names[i], v, allow_missing) for v in column]
            if isinstance(column, list) and i < len(names)
            else column
            for i, column in enumerate(data)
        ]
    order = [str(c) for c in columns] if columns is not None else names
    return [
        [
            _code(bundle, order[j], v, allow_missing) if j < len(order) else v
            for j, v in enumerate(row)
        ]
        if isinstance(row, list)
        else row
        for row in data
    ]


def _code(bundle: Bundle, name: str, value: Any, allow_missing: bool) -> Any:
    known = bundle.categories.get(name)
    if known is None:
        if isinstance(value, str):
            raise CategoryError(f"column '{name}' takes numbers, got the text {value[:40]!r}")
        return value
    if value is None:
        return None
    try:
        return float(known.index(category_text(value)))
    except ValueError:
        if not allow_missing:
            listed = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
            raise CategoryError(
                f"column '{name}': category {category_text(value)[:40]!r} was not seen in "
                f"training (known: {listed}); it would be scored as missing, which "
                "serve.allow_missing=true permits"
            ) from None
        return None

"""The model's trees as the server calls them: compiled to C, or the XGBoost booster.

`mlgate bundle` and `mlgate deploy` compile the booster into `model.so` with tl2cgen and the
runner's C compiler, next to a small entry point of ours that scores float64 rows (NaN is
missing) in one call. The serving image then loads it with ctypes: no xgboost, scipy or
tl2cgen inside, and a single row costs microseconds instead of XGBoost's ~0.3 ms per call.

A compiled model is only written after it agrees with the booster to `tolerance` on rows made
to sit on, just above and just below every split threshold, with missing values, plus the
caller's own rows. tl2cgen's threshold quantisation is off: it moved predictions by up to 0.01
in an early measurement. A disagreement refuses the bundle (and so the deploy) instead of
serving other numbers than the registry's model.

Compiling needs xgboost, treelite and tl2cgen (the training lock) and a C compiler; scoring
needs only numpy and the shared object, which depends on nothing but libm (`expf`).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mlgate.errors import ConfigError, ModelError
from mlgate.serving import fastjson, tables

LIBRARY = "model.so"
TOLERANCE = 1e-6
SMALL_BATCH = 256  # rows below this are scored on the calling thread
CFLAGS = ("-O3", "-fPIC", "-std=c99")

# Ours, compiled with tl2cgen's sources: a request's rows in one call. The generated
# `predict` adds every tree into result[0], so each row's output starts at zero.
ENTRY_POINT = """\
#include <math.h>
#include "header.h"

void mlgate_predict(const double* rows, long n, long width, float* out) {
  union Entry row[width];
  for (long i = 0; i < n; ++i) {
    const double* x = rows + i * width;
    for (long j = 0; j < width; ++j) {
      if (isnan(x[j])) {
        row[j].missing = -1;
      } else {
        row[j].fvalue = (float)x[j];
      }
    }
    out[i] = 0.0f;
    predict(row, 0, out + i);
  }
}
"""


class Trees(Protocol):
    engine: str

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Probabilities (float64) of the rows of `matrix` (float64, NaN = missing)."""
        ...


class CompiledTrees:
    """`model.so` through ctypes. ctypes lets go of the GIL during the call, so a large
    request is split across `threads` and scored in parallel."""

    engine = "compiled"

    def __init__(self, library: Path, width: int, threads: int | None = None) -> None:
        try:
            lib = ctypes.CDLL(str(library))
            self._predict = lib.mlgate_predict
        except (OSError, AttributeError) as exc:
            raise ModelError(
                f"{library} cannot be loaded: {exc}",
                fix="re-export the bundle with this mlgate (`mlgate bundle`), on a runner whose "
                "C library is not newer than the image's base",
            ) from exc
        self.json_numbers = fastjson.bind(lib)  # OIP JSON numbers straight to numpy
        self._predict.restype = None
        self._predict.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_void_p]
        lib.get_num_feature.restype = ctypes.c_int32
        if lib.get_num_feature() != width:
            raise ModelError(
                f"{library} takes {lib.get_num_feature()} features, the bundle lists {width}",
                fix="re-export the bundle",
            )
        self.width = width
        self.threads = max(1, threads or os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(matrix, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"expected rows of {self.width} values, got shape {rows.shape}")
        out = np.empty(len(rows), dtype=np.float32)
        if self._pool is None or len(rows) < SMALL_BATCH:
            self._call(rows, out)
        else:
            parts = zip(
                np.array_split(rows, self.threads), np.array_split(out, self.threads), strict=True
            )
            for done in [self._pool.submit(self._call, r, o) for r, o in parts]:
                done.result()
        return out.astype(np.float64)

    def _call(self, rows: np.ndarray, out: np.ndarray) -> None:
        self._predict(rows.ctypes.data, len(rows), self.width, out.ctypes.data)


class BoosterTrees:
    """The XGBoost booster itself: bundles without compiled trees, and the parity reference."""

    engine = "xgboost"

    def __init__(self, booster: Any, threads: int | None = None) -> None:
        self.booster = booster
        self.threads = max(1, threads or os.cpu_count() or 1)
        self.booster.set_param({"nthread": 1})
        self._nthread = 1

    @classmethod
    def from_bytes(cls, raw: bytes, threads: int | None = None) -> BoosterTrees:
        try:
            import xgboost as xgb
        except ImportError as exc:
            raise ModelError(
                "this bundle has no compiled trees, and xgboost is not installed to serve it",
                fix="re-export the bundle with this mlgate (`mlgate bundle`): it compiles them",
            ) from exc
        booster = xgb.Booster()
        booster.load_model(bytearray(raw))
        return cls(booster, threads)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        threads = 1 if len(matrix) < SMALL_BATCH else self.threads
        if threads != self._nthread:
            self.booster.set_param({"nthread": threads})
            self._nthread = threads
        return np.asarray(
            self.booster.inplace_predict(matrix, validate_features=False), dtype=np.float64
        )


def compile_trees(
    raw_model: bytes,
    dest: Path,
    *,
    compiler: str = "cc",
    extra_rows: np.ndarray | None = None,
    tolerance: float = TOLERANCE,
    json_numbers: bool = True,
) -> dict[str, Any]:
    """Compile the booster in `raw_model` to `dest/model.so`, check it against the booster,
    and return what bundle.json records of it. Nothing is written unless the check passes.
    The C is our node tables (serving/tables.py) when they cover the model, tl2cgen's
    otherwise; both pass the same parity check. `json_numbers=False` leaves out the server's
    JSON reader (serving/fastjson.py, its own translation unit: the trees' code is the same
    without it), which the gate's latency measurement does not call: it costs more compiler
    time than the trees of a small model."""
    cc = shutil.which(compiler)
    if cc is None:
        raise ConfigError(
            f"no C compiler '{compiler}' on PATH: the serving bundle carries the trees compiled "
            "to C",
            fix="install one (Debian/Ubuntu: apt-get install gcc libc6-dev; GitHub's runners have "
            "it) or point serve.compiler (MLGATE_SERVE_COMPILER) at one",
        )
    reference = BoosterTrees.from_bytes(raw_model)
    booster = reference.booster
    with tempfile.TemporaryDirectory(prefix="mlgate-trees-") as tmp:
        src = Path(tmp)
        generator: dict[str, Any]
        try:  # our node tables, scored a block of rows at a time (serving/tables.py)
            (src / "mlgate_tables.c").write_text(tables.generate(booster))
            generator = {"generator": tables.GENERATOR}
        except tables.Unsupported as reason:  # tl2cgen covers the rest
            generator = {"generator": "tl2cgen", "tl2cgen": _tl2cgen(booster, src)}
            generator["fallback_reason"] = str(reason)
        if json_numbers:
            (src / "mlgate_json.c").write_text(fastjson.C_SOURCE)
        library = src / LIBRARY
        _build(cc, sorted(src.glob("*.c")), library)
        compiled = CompiledTrees(library, booster.num_features(), threads=1)
        rows = parity_rows(booster, extra_rows)
        diff = np.abs(compiled.predict(rows) - reference.predict(rows))
        worst = int(np.nanargmax(diff))  # parity_rows gives 4,000 rows at least
        if not np.isfinite(diff).all() or diff[worst] > tolerance:
            raise ModelError(
                f"the compiled trees disagree with the booster by {diff[worst]:.3g} (tolerance "
                f"{tolerance:g}) on parity row {worst} of {len(rows)}; nothing was written",
                fix="report it with the model version; the registry's model is unchanged",
            )
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(library, dest / LIBRARY)
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False)
    return {
        "file": LIBRARY,
        "sha256": hashlib.sha256((dest / LIBRARY).read_bytes()).hexdigest(),
        "compiler": (version.stdout.splitlines() or [compiler])[0],
        "cflags": list(CFLAGS),
        **generator,
        "parity": {
            "rows": len(rows),
            "max_abs_diff": float(diff[worst]),
            "tolerance": tolerance,
        },
    }


def _tl2cgen(booster: Any, src: Path) -> str:
    """tl2cgen's C for `booster` and our entry point, into `src`; returns tl2cgen's version."""
    import tl2cgen
    import treelite

    units = max(1, min(os.cpu_count() or 1, booster.num_boosted_rounds() // 25))
    with _quiet() as said:
        try:
            model = treelite.frontend.from_xgboost(booster)
            tl2cgen.generate_c_code(
                model, dirpath=str(src), params={"parallel_comp": units, "quantize": 0}
            )
        except Exception as exc:
            raise ModelError(
                f"tl2cgen could not translate the booster: {exc}\n{said()}",
                fix="the model uses something tl2cgen does not support; report it",
            ) from exc
    (src / "mlgate_entry.c").write_text(ENTRY_POINT)
    return str(tl2cgen.__version__)


def _build(cc: str, sources: list[Path], library: Path) -> None:
    """Compile the translation units side by side, then link them."""
    jobs = [
        subprocess.Popen(
            [cc, *CFLAGS, "-c", str(source), "-o", str(source.with_suffix(".o"))],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for source in sources
    ]
    link = [cc, "-shared", "-o", str(library), *[str(s.with_suffix(".o")) for s in sources], "-lm"]
    for job in jobs:
        out, _ = job.communicate(timeout=900)
        if job.returncode != 0:
            raise ModelError(
                f"compiling the trees with {cc} failed:\n{out[-2000:]}",
                fix="check the compiler (gcc with libc6-dev works), or set serve.compiler",
            )
    done = subprocess.run(link, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ModelError(
            f"linking the trees with {cc} failed:\n{done.stderr[-2000:]}",
            fix="check the compiler (gcc with libc6-dev works), or set serve.compiler",
        )


def parity_rows(booster: Any, extra: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Rows where a compiled model would first go wrong: each feature's value is one of its
    split thresholds, the float32 just below or above one, or missing; a categorical feature's
    value is any code from 0 to one past the highest its splits name (an unseen code), or
    missing. 4,000 rows, plus `extra` (the logged input example, say)."""
    width = booster.num_features()
    splits: list[list[float]] = [[] for _ in range(width)]
    names = booster.feature_names or [f"f{i}" for i in range(width)]
    index = {name: i for i, name in enumerate(names)}
    types = booster.feature_types or [None] * width
    frame = booster.trees_to_dataframe()
    categories = frame["Category"] if "Category" in frame else [None] * len(frame)
    for feature, split, cats in zip(frame["Feature"], frame["Split"], categories, strict=True):
        if feature not in index:
            continue
        if types[index[feature]] == "c":
            if isinstance(cats, (list, tuple, np.ndarray)):
                splits[index[feature]].extend(float(c) for c in cats)
        elif np.isfinite(split):
            splits[index[feature]].append(split)
    rng = np.random.default_rng(seed)
    n = 4000
    rows = np.zeros((n, width), dtype=np.float64)
    for j, thresholds in enumerate(splits):
        if types[j] == "c":
            top = int(max(thresholds, default=0.0)) + 2  # every code, and one never seen
            column = rng.integers(0, top, n).astype(np.float64)
            column[rng.random(n) < 0.1] = np.nan
            rows[:, j] = column
            continue
        at = np.asarray(thresholds or [0.0], dtype=np.float32)[
            rng.integers(0, max(1, len(thresholds)), n)
        ]
        step = rng.integers(-1, 2, n)  # -1: just below, 0: on it, 1: just above
        column = np.where(
            step < 0,
            np.nextafter(at, np.float32(-np.inf)),
            np.where(step > 0, np.nextafter(at, np.float32(np.inf)), at),
        ).astype(np.float64)
        column[rng.random(n) < 0.1] = np.nan
        rows[:, j] = column
    if extra is not None and len(extra):
        rows = np.vstack([np.asarray(extra, dtype=np.float64).reshape(-1, width), rows])
    return rows


_QUIET = threading.Lock()


@contextmanager
def _quiet() -> Iterator[Callable[[], str]]:
    """treelite and tl2cgen talk as they work: from C++ straight to file descriptor 2 (a
    version notice on every load), through `print` and through warnings. Keep all of it, and
    show it only with an error."""
    import contextlib
    import io
    import warnings

    printed = io.StringIO()
    with _QUIET:  # fd 2, stdout and the warning filters are the process's: one at a time
        saved = os.dup(2)
        with tempfile.TemporaryFile(mode="w+b") as native, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.dup2(native.fileno(), 2)

            def said() -> str:
                native.seek(0)
                return (printed.getvalue() + native.read().decode(errors="replace"))[-2000:]

            try:
                with contextlib.redirect_stdout(printed):
                    yield said
            finally:
                os.dup2(saved, 2)
                os.close(saved)

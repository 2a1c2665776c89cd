"""Our own C for the trees: flat node tables, traversed a block of rows at a time.

`generate(booster)` reads the booster's JSON model (`save_raw("json")`: per tree, the
arrays of split feature, threshold, children, default-left and leaf values) and writes one C
file holding every tree's nodes as four flat arrays, plus `mlgate_predict` and
`get_num_feature` with the same signatures as the tl2cgen build (trees.ENTRY_POINT), so
`trees.CompiledTrees` loads either.

The layout is the one XGBoost's blocked CPU predictor uses: the nodes of a tree are renumbered
breadth-first so that a node's right child is its left child plus one, and the next node is
`left[n] + (goes right)`, without a branch. A leaf points at itself (its `left` is its own
index minus one and its threshold is NaN, so it always "goes right" to itself), which lets
every row of a block take exactly the tree's depth in steps. The rows of a block (converted
to float32 once, NaN is missing) advance one level together, so the CPU overlaps their memory
loads instead of waiting on one row's chain of nodes. A block without a missing value (found
while converting it) takes a loop that does not look up default directions, and when every
tree has the same depth it is a constant the compiler unrolls by (-O3): 17 % less time on the
benchmark's 200 trees of depth 6, the same sums. A tree's sum is accumulated in float32
from the base margin in tree order, then the objective's link (sigmoid) is applied, as XGBoost
does.

What it covers: `gbtree` boosters with one output (num_class 0, one target), numeric splits,
objectives `binary:logistic`, `reg:logistic` (sigmoid) and `reg:squarederror` (identity).
Anything else (categorical splits, dart, multi-class, other objectives) returns a reason
instead of a source, and the caller compiles with tl2cgen. Both builds go through the same
parity check against the booster before anything is written.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

GENERATOR = "mlgate-tables/1"
SIGMOID = ("binary:logistic", "reg:logistic")
IDENTITY = ("reg:squarederror",)
ROW_FLOATS = 16384  # a block's rows, as float32, fit in 64 KB (about L1 and L2's share)
MAX_BLOCK = 64
DEFAULT_LEFT = 1 << 31


class Unsupported(Exception):
    """The model uses something these tables do not cover (tl2cgen compiles it instead)."""


def generate(booster: Any) -> str:
    """C source for an `xgboost.Booster`; raises Unsupported with the reason for what it
    does not cover."""
    return source(json.loads(bytes(booster.save_raw("json"))))


def source(model: dict[str, Any]) -> str:
    """C source for an XGBoost JSON model (the parsed `save_raw("json")`)."""
    learner = model["learner"]
    params = learner["learner_model_param"]
    objective = learner["objective"]["name"]
    if objective not in SIGMOID + IDENTITY:
        raise Unsupported(f"objective {objective}")
    if int(params.get("num_class", "0")) > 1 or int(params.get("num_target", "1")) != 1:
        raise Unsupported("more than one output")
    booster = learner["gradient_booster"]
    if booster["name"] != "gbtree":
        raise Unsupported(f"booster {booster['name']}")
    width = int(params["num_feature"])
    if width > ROW_FLOATS:  # one row's float32 copy lives on the calling thread's stack
        raise Unsupported(f"{width} features (the tables take up to {ROW_FLOATS})")
    base = _base_margin(params["base_score"], objective)
    trees = booster["model"]["trees"]
    feature: list[int] = []
    threshold: list[float] = []
    left: list[int] = []
    value: list[float] = []
    roots: list[int] = []
    depths: list[int] = []
    for tree in trees:
        if any(int(t) != 0 for t in tree["split_type"]):
            raise Unsupported("categorical splits")
        if int(tree["tree_param"].get("size_leaf_vector", "1")) > 1:
            raise Unsupported("vector leaves")
        roots.append(len(left))
        depths.append(_append_tree(tree, width, feature, threshold, left, value))
    block = max(1, min(MAX_BLOCK, ROW_FLOATS // max(1, width)))
    link = "1.0f / (1.0f + expf(-s))" if objective in SIGMOID else "s"
    return _TEMPLATE.format(
        generator=GENERATOR,
        objective=objective,
        width=width,
        nodes=len(left),
        ntrees=len(roots),
        block=block,
        base=_float(base),
        link=link,
        feature=_ints(feature),
        threshold=", ".join(_float(t) for t in threshold),
        left=_ints(left),
        value=", ".join(_float(v) for v in value),
        roots=_ints(roots) or "0",
        depths=_ints(depths) or "0",
        # every tree as deep as the deepest (max_depth's usual outcome): a constant the
        # compiler unrolls the levels by
        depth_macro=(
            f"#define DEPTH(t) {depths[0]}"
            if depths and len(set(depths)) == 1
            else "#define DEPTH(t) depths[t]"
        ),
    )


def _append_tree(
    tree: dict[str, Any],
    width: int,
    feature: list[int],
    threshold: list[float],
    left: list[int],
    value: list[float],
) -> int:
    """Append one tree breadth-first (right child = left child + 1); return its depth."""
    lefts, rights = tree["left_children"], tree["right_children"]
    splits, conditions = tree["split_indices"], tree["split_conditions"]
    defaults = tree["default_left"]
    base = len(left)
    order = [0]  # old ids in new order
    depth_of = [0]
    slot_left: dict[int, int] = {}
    i = 0
    while i < len(order):
        old = order[i]
        if lefts[old] != -1:
            slot_left[old] = base + len(order)
            order += [lefts[old], rights[old]]
            depth_of += [depth_of[i] + 1] * 2
        i += 1
    for i, old in enumerate(order):
        if lefts[old] == -1:  # a leaf goes "right" to itself, whatever the row holds
            feature.append(0)
            threshold.append(math.nan)
            left.append(base + i - 1)
            value.append(float(conditions[old]))
        else:
            f = int(splits[old])
            if not 0 <= f < width:
                raise Unsupported(f"split on feature {f} of {width}")
            feature.append(f | (DEFAULT_LEFT if int(defaults[old]) else 0))
            threshold.append(float(conditions[old]))
            left.append(slot_left[old])
            value.append(0.0)
    return max(depth_of)


def _base_margin(text: str, objective: str) -> float:
    """XGBoost keeps base_score as a probability for logistic objectives ("[5E-1]" since 2.1)."""
    values = json.loads(text) if text.strip().startswith("[") else [float(text)]
    if len(values) != 1:
        raise Unsupported("more than one base score")
    score = float(np.float32(values[0]))
    if objective in SIGMOID:
        if not 0.0 < score < 1.0:
            raise Unsupported(f"base_score {score} for {objective}")
        return -math.log(1.0 / score - 1.0)
    return score


def _float(x: float) -> str:
    f = float(np.float32(x))
    if math.isnan(f):
        return "NAN"
    if math.isinf(f):
        return "INFINITY" if f > 0 else "-INFINITY"
    return f.hex() + "f"


def _ints(values: list[int]) -> str:
    return ", ".join(str(v) for v in values)


_TEMPLATE = """\
/* Generated by {generator} from the booster's JSON model ({objective}). */
#include <math.h>
#include <stdint.h>

#define WIDTH {width}
#define BLOCK {block}
#define NTREES {ntrees}
#define FEATURE_MASK 0x7fffffffu
{depth_macro}

static const uint32_t feature[{nodes}] = {{{feature}}};
static const float threshold[{nodes}] = {{{threshold}}};
static const int32_t left[{nodes}] = {{{left}}};
static const float value[{nodes}] = {{{value}}};
static const int32_t roots[] = {{{roots}}};
static const int32_t depths[] = {{{depths}}};

int32_t get_num_feature(void) {{ return WIDTH; }}

void mlgate_predict(const double* rows, long n, long width, float* out) {{
  float x[BLOCK * WIDTH];
  float sum[BLOCK];
  int32_t at[BLOCK];
  (void)width;
  for (long start = 0; start < n; start += BLOCK) {{
    const long m = n - start < BLOCK ? n - start : BLOCK;
    int missing = 0;
    for (long i = 0; i < m * WIDTH; ++i) {{
      const float v = (float)rows[start * WIDTH + i];
      missing |= isnan(v);
      x[i] = v;
    }}
    for (long i = 0; i < m; ++i) sum[i] = {base};
    for (int t = 0; t < NTREES; ++t) {{
      const int32_t root = roots[t];
      for (long i = 0; i < m; ++i) at[i] = root;
      for (int d = 0; d < DEPTH(t); ++d) {{
        if (missing) {{
          for (long i = 0; i < m; ++i) {{
            const int32_t k = at[i];
            const uint32_t f = feature[k];
            const float v = x[i * WIDTH + (f & FEATURE_MASK)];
            const int right = isnan(v) ? !(f >> 31) : !(v < threshold[k]);
            at[i] = left[k] + right;
          }}
        }} else {{  /* no missing value in the block: no default directions to look up */
          for (long i = 0; i < m; ++i) {{
            const int32_t k = at[i];
            const float v = x[i * WIDTH + (feature[k] & FEATURE_MASK)];
            at[i] = left[k] + !(v < threshold[k]);
          }}
        }}
      }}
      for (long i = 0; i < m; ++i) sum[i] += value[at[i]];
    }}
    for (long i = 0; i < m; ++i) {{
      const float s = sum[i];
      out[start + i] = {link};
    }}
  }}
}}
"""

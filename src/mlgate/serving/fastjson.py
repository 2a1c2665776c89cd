"""Large JSON bodies' numbers straight into a numpy array (no Python list per value).

The common large request is OIP v2 with one input whose `data` is a flat (or row-nested) array
of numbers, or MLflow's `dataframe_split` with its `data` rows. For those, `oip()` and
`dataframe_split()` find the one `"data":` key, parses the array with a small C routine
(`C_SOURCE`, compiled into the bundle's `model.so` beside the trees by `trees.compile_trees`)
into a float64 array, and parse the rest of the body with orjson with the array replaced by a
marker string (a fixed prefix and a random token of each call, so that no body can hold it,
not even escaped). The fast path is taken only if that marker comes back as the value of the one
input's `data` (`dataframe_split.data`): then the body is the rest (valid JSON, checked by orjson) with a valid JSON
array in a value's place.

The C scanner walks the body up to the 0 byte that ends every Python bytes object's buffer
(no bound test per character: 12 % faster), and follows JSON's grammar to the letter (`-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?
[0-9]+)?`, JSON whitespace between tokens) and gives up (the caller falls back to orjson, which
answers or refuses as before) on anything else: `null`, `true`, strings, deeper nesting, rows of
different lengths, an empty array, a number out of double's range (orjson refuses those), an
integer of more than 15 digits (orjson makes it a Python int), a token over 63 characters. Numbers are correctly rounded, like orjson's: Clinger's exact fast
path (at most 19 significant digits, a value under 2^53, a power of ten up to 22), otherwise the
C library's `strtod` (glibc's is correctly rounded; the C locale is the server's). An integer
`-0` is 0.0, as orjson's integer 0 becomes.

Small bodies, categorical bundles (their inputs may be text) and bundles without the routine
(the booster engine, or an older `model.so`) take orjson, as before.
"""

from __future__ import annotations

import ctypes
import secrets
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

SYMBOL = "mlgate_json_numbers"
MIN_BODY = 64 * 1024  # below this, orjson and a list cost less than the extra steps
MARK = "\x00mlgate-fastjson"
MARK_JSON = b'"\\u0000mlgate-fastjson"'
WHITESPACE = b" \t\n\r"

C_SOURCE = r"""
/* mlgate's JSON number arrays (serving/fastjson.py). */
#include <stdlib.h>
#include <math.h>

static const double P10[23] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
  1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* s[n] is 0 (a Python bytes object's buffer ends with one): no test below goes past it, as no
   byte class that continues a token includes 0. */
static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static int is_digit(char c) { return (unsigned char)(c - '0') < 10; }

/* One JSON number from *at; 0 on success (*at moved past it), -1 if it is not one we take. */
static int number(const char** at, double* v) {
  const char *p = *at, *start = *at;
  int neg = 0, integral = 1, digits = 0, exp10 = 0;
  unsigned long long mant = 0;
  if (*p == '-') { neg = 1; ++p; }
  if (!is_digit(*p)) return -1;
  if (*p == '0') {
    ++p;
  } else {
    while (is_digit(*p)) {
      if (digits < 19) { mant = mant * 10 + (unsigned)(*p - '0'); ++digits; } else { ++exp10; digits = 99; }
      ++p;
    }
  }
  if (*p == '.') {
    integral = 0;
    ++p;
    if (!is_digit(*p)) return -1;
    while (is_digit(*p)) {
      if (mant == 0 && *p == '0') { --exp10; }
      else if (digits < 19) { mant = mant * 10 + (unsigned)(*p - '0'); ++digits; --exp10; }
      else { digits = 99; }
      ++p;
    }
  }
  if (*p == 'e' || *p == 'E') {
    int eneg = 0, e = 0;
    integral = 0;
    ++p;
    if (*p == '+' || *p == '-') { eneg = *p == '-'; ++p; }
    if (!is_digit(*p)) return -1;
    while (is_digit(*p)) { if (e < 100000) e = e * 10 + (*p - '0'); ++p; }
    exp10 += eneg ? -e : e;
  }
  if (p - start > 63 || (integral && digits > 15)) return -1; /* long integers: orjson's ints */
  if (mant == 0 && integral) {
    *v = 0.0; /* orjson: the integer 0, also for -0 */
  } else if (digits <= 19 && mant <= (1ULL << 53) && exp10 >= -22 && exp10 <= 22) {
    double x = (double)mant;
    x = exp10 < 0 ? x / P10[-exp10] : x * P10[exp10];
    *v = neg ? -x : x;
  } else {
    char buf[64];
    long k;
    for (k = 0; k < p - start; ++k) buf[k] = start[k];
    buf[k] = 0;
    *v = strtod(buf, NULL);
  }
  if (isinf(*v) || isnan(*v)) return -1;
  *at = p;
  return 0;
}

/* Numbers of a JSON array at s[start] ('['): flat, or rows of equal length. Returns how many
   (writing at most cap to out), sets *end just past the array and *rows_of to the rows' length
   (-1: flat), or returns -1. s[n] must be 0. */
long mlgate_json_numbers(const char* s, long n, long start, double* out, long cap, long* end,
                         long* rows_of) {
  const char* p = s + start;
  long count = 0, width = -1;
  int nested;
  if (start >= n || s[n] != 0 || *p != '[') return -1;
  ++p;
  while (is_ws(*p)) ++p;
  nested = *p == '[';
  for (;;) {
    long row = 0;
    if (nested) {
      if (*p != '[') return -1;
      ++p;
      while (is_ws(*p)) ++p;
    }
    for (;;) {
      if (count >= cap) return -1;
      if (number(&p, out + count) != 0) return -1;
      ++count;
      ++row;
      while (is_ws(*p)) ++p;
      if (*p == ',') {
        ++p;
        while (is_ws(*p)) ++p;
        continue;
      }
      if (*p == ']') { ++p; break; }
      return -1;
    }
    if (!nested) break;
    if (width >= 0 && row != width) return -1;
    width = row;
    while (is_ws(*p)) ++p;
    if (*p == ',') {
      ++p;
      while (is_ws(*p)) ++p;
      continue;
    }
    if (*p == ']') { ++p; break; }
    return -1;
  }
  if (p - s > n) return -1;
  *end = p - s;
  *rows_of = nested ? width : -1;
  return count;
}
"""


def bind(lib: ctypes.CDLL) -> Any:
    """The routine in a loaded `model.so`, or None (a library compiled before it existed)."""
    try:
        parse = getattr(lib, SYMBOL)
    except AttributeError:
        return None
    parse.restype = ctypes.c_long
    parse.argtypes = [
        ctypes.c_char_p,
        ctypes.c_long,
        ctypes.c_long,
        ctypes.c_void_p,
        ctypes.c_long,
        ctypes.POINTER(ctypes.c_long),
        ctypes.POINTER(ctypes.c_long),
    ]
    return parse


def oip(body: bytes, bundle: Any) -> dict[str, Any] | None:
    """The OIP v2 payload of `body` with its one input's `data` as a flat float64 array, or
    None when the fast path does not apply (the caller then parses with orjson)."""
    return _with_numbers(body, bundle, _oip_slot, flat=True)


def dataframe_split(body: bytes, bundle: Any) -> dict[str, Any] | None:
    """MLflow's `{"dataframe_split": {"columns": [...], "data": [[...], ...]}}` with `data` as
    a float64 array of rows (flat data stays flat, as numpy makes it), or None (orjson's turn)."""
    return _with_numbers(body, bundle, _split_slot, flat=False)


def _oip_slot(payload: dict[str, Any]) -> dict[str, Any] | None:
    inputs = payload.get("inputs")
    if isinstance(inputs, list) and len(inputs) == 1 and isinstance(inputs[0], dict):
        return inputs[0]
    return None


def _split_slot(payload: dict[str, Any]) -> dict[str, Any] | None:
    split = payload.get("dataframe_split")
    return split if isinstance(split, dict) else None


def _with_numbers(
    body: bytes, bundle: Any, slot: Callable[[dict[str, Any]], dict[str, Any] | None], flat: bool
) -> dict[str, Any] | None:
    """`body` parsed, with the array under its one `"data"` key read by the C routine, when
    that key is where `slot` says; else None."""
    parse = getattr(bundle.trees, "json_numbers", None)
    if parse is None or bundle.categories or len(body) < MIN_BODY or not isinstance(body, bytes):
        return None
    key = body.find(b'"data"')
    if key < 0:
        return None
    i = key + len(b'"data"')
    while i < len(body) and body[i] in WHITESPACE:
        i += 1
    if i >= len(body) or body[i] != ord(":"):
        return None
    i += 1
    while i < len(body) and body[i] in WHITESPACE:
        i += 1
    cap = (len(body) - i) // 2 + 1  # a number and a comma take two bytes at least
    out = np.empty(cap, dtype=np.float64)  # untouched pages cost nothing
    end, width = ctypes.c_long(0), ctypes.c_long(-1)
    count = parse(body, len(body), i, out.ctypes.data, cap, ctypes.byref(end), ctypes.byref(width))
    if count <= 0:
        return None
    # The array holds only numbers, commas, brackets and whitespace: a second "data" key or
    # the marker can only be in the rest (scanning the whole body for them cost 2.5 ms at
    # 3.4 MB). The marker ends in a random token, so no body can carry it, escaped or not.
    head, tail = body[:i], body[end.value :]
    if b'"data"' in tail or MARK_JSON[1:-1] in head or MARK_JSON[1:-1] in tail:
        return None
    token = secrets.token_hex(8)
    try:
        payload = orjson.loads(head + MARK_JSON[:-1] + token.encode() + b'"' + tail)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict):
        return None
    where = slot(payload)
    if where is None or where.get("data") != MARK + token:
        return None
    # a view, not a copy: the array's unwritten tail was never touched, so it holds no
    # memory (a copy cost 1.5 ms and the page faults of 7 MB on 10,000 x 85 values)
    numbers = out[:count]
    where["data"] = numbers if flat or width.value < 0 else numbers.reshape(-1, width.value)
    return payload

"""The memory of `mlgate serve`'s processes: what a large request freed is kept for the next.

Only the standard library (ctypes): `mlgate serve`'s worker and scoring processes call
`keep_freed_memory` as they start (mlgate.serving.app).
"""

from __future__ import annotations

# glibc's mallopt parameters, and the sizes mlgate serve's processes use
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's largest (HEAP_MAX_SIZE / 2 on 64 bits)
TRIM_THRESHOLD_BYTES = 128 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the memory a large request freed for the next one, instead of
    returning it to the kernel (blocks over 128 KiB are mapped and unmapped each time by
    default, until its dynamic threshold adapts): a 10,000-row request then reuses its body's
    and arrays' pages rather than faulting fresh ones in (about 10 % of its CPU over the first
    requests, and the spikes of 10-25 ms when the kernel backs them with huge pages). What it
    costs: a worker keeps the memory of its largest recent requests (up to 128 MB) mapped.
    False (nothing changed) where the C library is not glibc."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )

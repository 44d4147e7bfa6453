"""litbench harness: specs, runner, launcher and CLI (`litbench`, `python -m benchmarks`)."""

import ctypes
import os
import sys
import warnings

# OpenMP threads that spin at every barrier (libgomp's default) are catastrophic on a CPU machine
# shared with other work: RELIANT's cpu students ran 143-266 s with 2 spinning threads vs 7-13 s
# with OMP_WAIT_POLICY=PASSIVE (same run, alternated, 2 cores under load; `litbench perf threads`
# measures it). Set before torch loads libgomp; a user's own setting wins. Worker and DDP
# processes inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def keep_freed_host_memory() -> bool:
    """Opt-in (``LITBENCH_MALLOC=kept``): stop glibc from handing freed tensor memory back to the OS.

    glibc's malloc serves large blocks with mmap and trims the heap top on free, so each training
    step can page-fault its activation buffers back in (kernel time). mallopt at run time has the
    effect of MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ at start-up: blocks up to 32 MiB (glibc's
    cap) come from the heap, and the heap is not trimmed. It is not the default because it did not
    pay on a real run: `litbench perf threads emo emo_1m --profile cpu --repeats 2 --set
    trainer.max_epochs=1` (2 cores, quiet) gave a median run of 56.3 s with the heap kept against
    49.0 s with glibc's behaviour, although a synthetic conv-net loop spent far less time in the
    kernel with it. Ignored when the user set either MALLOC_ variable; a no-op off glibc. Returns
    whether it applied.
    """
    if os.environ.get("LITBENCH_MALLOC", "").lower() != "kept" or sys.platform != "linux" \
            or any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False


HOST_MEMORY_KEPT = keep_freed_host_memory()

# Deprecation chatter from inside torch/lightning at import time, not actionable by users.
warnings.filterwarnings("ignore", message=r".*`torch\.jit\.script` is deprecated.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")

"""What this host's CPU can do, for tests of x86-only settings (CPU flags as numpy detects them at run time)."""

from __future__ import annotations

import platform


def is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def cpu_features() -> dict[str, bool]:
    """numpy's run-time CPU feature detection (``AVX``, ``AVX2``, ``FMA3``, ``AVX512F``, ... or ``NEON`` ...)."""
    from numpy._core import _multiarray_umath as m

    return dict(m.__cpu_features__)


def has(*features: str) -> bool:
    """Whether the CPU has every one of ``features`` (numpy's names)."""
    found = cpu_features()
    return all(found.get(f, False) for f in features)


def numpy_dispatch_targets() -> list[str]:
    """The SIMD targets this numpy build dispatches to at run time (what ``NPY_DISABLE_CPU_FEATURES`` may name)."""
    from numpy._core import _multiarray_umath as m

    return list(m.__cpu_dispatch__)

"""Process-wide TensorFlow settings, chosen per host; imported first by ``lungseg/__init__.py``.

Why: TensorFlow's pip wheel turns its oneDNN kernels on by default only on x86 CPUs with
AVX-512 VNNI/BF16/AMX. Elsewhere (AVX2-only CPUs such as AMD EPYC Milan, most laptops)
Conv3D and its gradients fall back to Eigen kernels that the wheel builds without AVX2/FMA.
Measured on a 2-core AMD EPYC (AVX2, no AVX-512), one training step of the default
64^3 base-8 U-Net (batch 4): 11.5 s with TensorFlow's default, 2.0 s with oneDNN on plus the
fused BatchNorm of :mod:`lungseg.nn.model` (``benchmarks/train_throughput.py`` prints the
host and both settings' figures). So oneDNN is switched on for every x86-64 host unless the
user has set ``TF_ENABLE_ONEDNN_OPTS`` themselves; it must happen before TensorFlow is
imported, hence this module has no heavy imports.

Likewise numpy's transparent huge pages are off unless the user sets ``NUMPY_MADVISE_HUGEPAGE``
(read once, when numpy is imported): numpy asks the kernel for huge pages for every large array,
and where the kernel's THP defrag setting is ``madvise`` (a common default) such a first touch may
wait for memory compaction. Measured on host E (2 cores, 24 GB, after hours of other jobs), one
``lungseg predict`` of a 512x512x134 DICOM series with SEG and RTSTRUCT: 3.9-4.7 s (system time
0.7-1.7 s) with huge pages, 3.3-3.5 s (0.35-0.41 s) without, alternating runs.
"""

from __future__ import annotations

import logging
import os
import platform
import sys

os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")  # before lungseg imports numpy: see the module docstring


def set_tensorflow_env() -> dict[str, str]:
    """Set TensorFlow environment defaults that the user has not set; returns what is in force."""
    if "tensorflow" in sys.modules and "TF_ENABLE_ONEDNN_OPTS" not in os.environ:
        logging.getLogger(__name__).warning(
            "TensorFlow was imported before lungseg: its oneDNN setting is already fixed (import lungseg first)")
    if platform.machine().lower() in ("x86_64", "amd64"):
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return {k: os.environ[k] for k in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL") if k in os.environ}


def configure_threads() -> None:
    """Use every core for one op and run ops one at a time (best on small CPUs; GPUs unaffected)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count() or 1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this process
        pass


def host_description() -> dict[str, str | int]:
    """CPU model, core count and the SIMD flags that matter for TensorFlow, for benchmark output."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    simd = [f for f in ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    return {
        "cpu": model,
        "cores": os.cpu_count() or 1,
        "simd": " ".join(simd) or "none found",
        "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "(not set)"),
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(TensorFlow default)"),
    }


def use_slab_kernel_gradient() -> bool:
    """Whether :class:`lungseg.nn.model.SlabGradConv3D` computes its kernel gradient as a 2D one.

    On x86 CPUs without AVX-512 (or with oneDNN limited below it by ``ONEDNN_MAX_CPU_ISA``)
    oneDNN runs the 3D convolution's kernel gradient as im2col + GEMM; the same gradient as one
    2D convolution gradient over depth slabs runs 1.2-2.9x faster there (measured per layer:
    8->8 channels at 64^3, batch 4: 217 -> 76 ms on host B, 132 -> 82 ms on host C limited to
    AVX2), and slower with AVX-512 (75 -> 142 ms). ``LUNGSEG_SLAB_GRAD=1``/``0`` forces it.
    """
    forced = os.environ.get("LUNGSEG_SLAB_GRAD")
    if forced in ("0", "1"):
        return forced == "1"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if isa and not isa.startswith("AVX512") and isa not in ("ALL", "DEFAULT") and not isa.startswith("AVX10"):
        return True
    simd = str(host_description().get("simd", ""))
    return "avx512f" not in simd.split()

"""Runtime settings chosen per host before TensorFlow is imported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lungseg.nn.runtime import host_description, set_tensorflow_env
from tests.helpers.host import has, is_x86_64

CHECK = "import os, lungseg, tensorflow as tf; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"


@pytest.mark.slow  # two TensorFlow imports
@pytest.mark.skipif(not is_x86_64(), reason="oneDNN default applies to x86-64")
def test_importing_lungseg_turns_onednn_on_unless_the_user_chose() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    on = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=True)
    assert on.stdout.strip() == "1"
    off = subprocess.run([sys.executable, "-c", CHECK], env={**env, "TF_ENABLE_ONEDNN_OPTS": "0"},
                         capture_output=True, text=True, check=True)
    assert off.stdout.strip() == "0"


def test_set_tensorflow_env_keeps_user_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    assert set_tensorflow_env()["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_host_description_names_cpu_cores_and_simd() -> None:
    host = host_description()
    assert host["cores"] == os.cpu_count() and host["cpu"]
    assert host["simd"]


@pytest.mark.skipif(not (is_x86_64() and os.path.isfile("/proc/cpuinfo")),
                    reason="the SIMD flags are read from /proc/cpuinfo's x86 flags (Linux on x86-64)")
def test_host_description_simd_flags_are_the_cpus() -> None:
    """The flags it reports are the ones numpy's own run-time detection finds on this CPU, present or not
    (an x86-64 CPU need not have AVX: an old one, or an emulator, has none of them)."""
    simd = str(host_description()["simd"]).split()
    for flag, feature in (("avx", "AVX"), ("avx2", "AVX2"), ("fma", "FMA3"), ("avx512f", "AVX512F")):
        assert (flag in simd) == has(feature), (flag, simd)
    assert (simd == ["none found"]) == (not has("AVX"))

"""What this CPU can do, read once: the instruction-set flags that decide how fast (and
how exactly) low-precision arithmetic runs here.

Why it matters: ONNX Runtime's int8 matrix products multiply unsigned 8-bit activations
by signed 8-bit weights. With VNNI (AVX512-VNNI, AVX-VNNI) or AMX the products are summed
straight into 32 bits; on x86 CPUs without them (AVX2, or AVX-512 without VNNI) the
kernel first adds pairs of products in 16 bits (VPMADDUBSW), which saturates when both
factors are large, and an int8 model can lose labels there that it keeps on a VNNI
machine. bf16 training is native only with AVX512-BF16 or AMX. Exports and benchmarks
record these flags next to their figures, since the figures depend on them.
"""
from __future__ import annotations

import functools
import platform
from typing import Any

# The flags reported, in this order: what decides int8 and bf16 arithmetic on x86.
REPORTED = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
            "amx_tile", "amx_int8", "amx_bf16")


@functools.lru_cache(maxsize=1)
def flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):  # x86 / ARM spelling
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "CPU part"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def is_x86(machine: str | None = None) -> bool:
    return (machine or platform.machine()).lower() in ("x86_64", "amd64", "i386", "i686")


def int8_path(cpu_flags: frozenset[str] | set[str], machine: str | None = None) -> str:
    """How ONNX Runtime multiplies u8 activations by s8 weights here: 'vnni' or 'amx'
    (32-bit sums, no saturation), 'u8s8-16bit' (x86 without VNNI: pairs summed in 16 bits,
    can saturate) or 'other' (ARM and the rest: no such 16-bit step)."""
    if not is_x86(machine):
        return "other"
    if "amx_int8" in cpu_flags:
        return "amx"
    if "avx512_vnni" in cpu_flags or "avx_vnni" in cpu_flags:
        return "vnni"
    return "u8s8-16bit"


def has_bf16(cpu_flags: frozenset[str] | None = None) -> bool:
    """bf16 matmuls are native (not emulated) with AVX512-BF16 or AMX."""
    cpu_flags = flags() if cpu_flags is None else cpu_flags
    return "avx512_bf16" in cpu_flags or "amx_bf16" in cpu_flags


def describe() -> dict[str, Any]:
    """The manifest's and the benchmarks' record of this CPU."""
    present = flags()
    return {"model": model_name(), "machine": platform.machine(), "flags": [f for f in REPORTED if f in present],
            "int8_path": int8_path(present), "bf16_native": has_bf16(present)}


def summary(record: dict[str, Any] | None = None) -> str:
    """One line: 'Intel Xeon (x86_64; avx2 avx512f avx512_vnni ...; int8 path vnni)'."""
    record = record or describe()
    listed = " ".join(record["flags"]) or "no AVX flags"
    return f"{record['model']} ({record['machine']}; {listed}; int8 path {record['int8_path']})"

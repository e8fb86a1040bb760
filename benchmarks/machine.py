"""The machine a benchmark ran on: CPU model, vector extensions, cores, load (Linux /proc, else platform)."""
from __future__ import annotations

import os
import platform
from pathlib import Path

VECTOR_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                "amx_tile", "amx_bf16", "amx_int8", "avx_vnni", "neon", "asimd", "sve")


def describe() -> dict:
    """{cpu_model, vector_extensions, logical_cpus, load_average (1, 5, 15 min)}."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model") and model in ("", platform.processor(), platform.machine()):
                    model = value.strip()
                elif key in ("flags", "Features"):
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return dict(cpu_model=model, vector_extensions=[f for f in VECTOR_FLAGS if f in flags],
                logical_cpus=os.cpu_count(), load_average=load_average())


def load_average() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def line(info: dict | None = None) -> str:
    """One line for a benchmark's header: model, extensions, cores, load."""
    info = info or describe()
    load = " ".join(f"{v:.2f}" for v in info["load_average"] or [])
    return (f"machine: {info['cpu_model']}; {info['logical_cpus']} logical CPUs; vector extensions "
            f"{' '.join(info['vector_extensions']) or 'unknown'}; load average {load or '?'}")


def rss_mb() -> float:
    """This process's resident memory in MB (Linux), NaN elsewhere."""
    status = Path("/proc/self/status")
    if status.exists():
        for text in status.read_text().splitlines():
            if text.startswith("VmRSS:"):
                return int(text.split()[1]) / 1024
    return float("nan")

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


def cpu_snapshot() -> dict:
    """Every process's CPU seconds (user + system) with its name, cores allowed and command line, and the
    machine's per-core jiffies from /proc/stat (Linux; {} elsewhere). Two snapshots make `cpu_delta`."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    procs = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            cores = next(line.split(":")[1].strip() for line in (entry / "status").read_text().splitlines()
                         if line.startswith("Cpus_allowed_list"))
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, StopIteration, ValueError):
            continue  # exited meanwhile
        procs[int(entry.name)] = dict(cpu_s=(int(fields[11]) + int(fields[12])) / tick, cores=cores,
                                      name=stat[stat.index("(") + 1:stat.rindex(")")], cmdline=cmdline)
    cores = {}
    try:
        for text in Path("/proc/stat").read_text().splitlines():
            if text.startswith("cpu") and text[3].isdigit():
                name, *values = text.split()
                cores[name] = [int(v) / tick for v in values]  # user nice system idle iowait irq softirq steal
    except OSError:
        pass
    return dict(procs=procs, cores=cores)


def cpu_delta(before: dict, after: dict, role) -> dict:
    """CPU seconds spent between two snapshots: {role: seconds} for the processes alive at the end
    (`role(proc)` names a process's role, e.g. "raylet" or "task"; a process that exited in between is
    not counted), and per core {user, system, softirq, idle} seconds."""
    roles: dict[str, float] = {}
    for pid, proc in after.get("procs", {}).items():
        spent = proc["cpu_s"] - before["procs"].get(pid, {}).get("cpu_s", 0.0)
        if spent > 0:
            name = role(proc)
            roles[name] = roles.get(name, 0.0) + spent
    cores = {}
    for name, values in after.get("cores", {}).items():
        d = [a - b for a, b in zip(values, before["cores"].get(name, values))]
        cores[name] = dict(user=round(d[0] + d[1], 2), system=round(d[2] + d[5], 2), softirq=round(d[6], 2),
                           idle=round(d[3] + d[4], 2))
    return dict(roles={k: round(v, 2) for k, v in sorted(roles.items(), key=lambda kv: -kv[1])}, cores=cores)


def cpu_lines(accounting: dict, min_s: float = 0.01) -> list[str]:
    """`cpu_delta`'s result as two printable lines: CPU seconds by role (those >= `min_s`), and per core."""
    return ["   CPU s by role: " + ", ".join(f"{role} {spent:.2f}" for role, spent in accounting["roles"].items()
                                         if spent >= min_s),
            "   per core user/system/softirq/idle s: " + ", ".join(
                f"{core} {c['user']:.2f}/{c['system']:.2f}/{c['softirq']:.2f}/{c['idle']:.2f}"
                for core, c in accounting["cores"].items())]

"""Reading a GPU run's traces: where the device sat idle in a torch.profiler trace, and the SM clock
and power samples of nvidia-smi (tools/benchmark_throughput.py --profile, tools/gpu_check.sh)."""

from __future__ import annotations

import statistics

DEVICE_WORK = ("kernel", "gpu_memcpy", "gpu_memset")  # Chrome-trace categories of torch.profiler
LAUNCHES = ("cuda_runtime", "cuda_driver")


def device_idle(events: list[dict], min_gap_us: float = 20.0):
    """The device's idle time in a profiled step, from torch.profiler's Chrome-trace events.

    Returns (busy_us, span_us, gaps). Each gap of at least ``min_gap_us`` is described by the work
    either side of it, when the host launched the next one (``late``: only after the device had
    gone idle, so the host was the bottleneck) and the CPU ops around that launch, innermost last.
    """
    work = sorted((e for e in events if e.get("cat") in DEVICE_WORK and e.get("ph") == "X"), key=lambda e: e["ts"])
    if not work:
        return 0.0, 0.0, []
    launch = {e["args"]["correlation"]: e for e in events
              if e.get("cat") in LAUNCHES and "correlation" in e.get("args", {})}
    ops = [e for e in events if e.get("cat") == "cpu_op" and e.get("ph") == "X"]
    busy, gaps, end, last = 0.0, [], work[0]["ts"], work[0]
    for e in work:
        if e["ts"] - end >= min_gap_us:
            gap = {"us": e["ts"] - end, "after": last["name"], "before": e["name"], "late": None, "host": []}
            src = launch.get(e.get("args", {}).get("correlation"))
            if src is not None:
                gap["late"] = src["ts"] > end
                around = [o for o in ops if o.get("tid") == src.get("tid") and o["ts"] <= src["ts"] <= o["ts"] + o["dur"]]
                gap["host"] = [o["name"] for o in sorted(around, key=lambda o: -o["dur"])]
            gaps.append(gap)
        busy += max(0.0, e["ts"] + e["dur"] - max(e["ts"], end))  # the union of the intervals
        if e["ts"] + e["dur"] > end:
            end, last = e["ts"] + e["dur"], e
    return busy, end - work[0]["ts"], sorted(gaps, key=lambda g: -g["us"])


def idle_report(events: list[dict], rows: int = 15) -> str:
    busy, span, gaps = device_idle(events)
    if not span:
        return "no device work in the profile"
    late = sum(g["us"] for g in gaps if g["late"])
    lines = [f"device busy {busy / 1e3:.1f} of {span / 1e3:.1f} ms ({100 * busy / span:.0f} %); idle "
             f"{(span - busy) / 1e3:.1f} ms, {sum(g['us'] for g in gaps) / 1e3:.1f} ms of it in {len(gaps)} gaps "
             f">= 20 us, {late / 1e3:.1f} ms of those waiting for a late launch by the host"]
    by_op: dict[str, float] = {}
    for g in gaps:
        host = g["host"] if len(g["host"]) <= 3 else g["host"][:1] + g["host"][-2:]
        where = " > ".join(host) if host else "(launch not found)"
        by_op[where] = by_op.get(where, 0.0) + g["us"]
    lines.append("idle before launches from (outermost > innermost CPU ops), ms:")
    lines += [f"  {us / 1e3:7.2f}  {where}" for where, us in sorted(by_op.items(), key=lambda kv: -kv[1])[:rows]]
    lines.append("largest gaps:")
    lines += [f"  {g['us'] / 1e3:7.2f} ms  {'late launch' if g['late'] else 'launched in time'}: "
              f"{g['after'][:40]} -> {g['before'][:40]}  [{' > '.join(g['host'][-3:])}]" for g in gaps[:rows]]
    return "\n".join(lines)


def summarize_clocks(lines: list[str]) -> str:
    samples = []
    for line in lines:
        try:
            clock, power = (float(x) for x in line.split(","))
        except ValueError:  # a partial last line, or "[N/A]"
            continue
        samples.append((clock, power))
    busy = [s for s in samples if s[1] > 0.5 * max(p for _, p in samples)] if samples else []
    if not busy:
        return "clocks: no samples"
    clocks, powers = [c for c, _ in busy], [p for _, p in busy]
    return (f"clocks while busy ({len(busy)} of {len(samples)} samples): SM {min(clocks):.0f} / "
            f"{statistics.median(clocks):.0f} / {max(clocks):.0f} MHz (min / median / max), "
            f"power median {statistics.median(powers):.0f} W, max {max(powers):.0f} W")

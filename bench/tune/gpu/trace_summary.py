"""Where a profiled training run's time goes, from the Chrome trace tune_check writes with
PGMLD_PROFILE_TRACE (torch.profiler / Kineto): GPU kernels (count, summed time, the time the
GPU was busy with at least one, over the span from the first to the last), the CUDA runtime
calls that fed them (launches, graph launches, copies, syncs), dtype-conversion kernels
(what autocast adds), the slowest kernels, and the busiest CPU ops. Per step when --steps
is given. One JSON line on stdout, then the same as Markdown.

On a trace without GPU kernels (a CPU run), it counts what a GPU would launch instead: the
leaf CPU ops (those that called no other op), less views, allocations and host reads, and
the dtype conversions (`aten::_to_copy`). That census is the same on either device, so a
CPU run of both trainers tells how many kernels each step would launch on a GPU.

    python3 trace_summary.py TRACE.json [--steps N] [--tag NAME]
"""

import collections
import json
import sys


def union_length(intervals):
    """Total length covered by (start, end) intervals."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


def tally(events):
    """(name, count, summed µs) per event name, most time first."""
    by_name = collections.defaultdict(lambda: [0, 0.0])
    for e in events:
        by_name[e["name"]][0] += 1
        by_name[e["name"]][1] += e["dur"]
    return sorted(((n, c, d) for n, (c, d) in by_name.items()), key=lambda t: -t[2])


# Ops that launch no kernel: views, allocations, metadata.
NO_KERNEL = {
    "aten::empty", "aten::empty_strided", "aten::view", "aten::_unsafe_view", "aten::as_strided",
    "aten::t", "aten::transpose", "aten::expand", "aten::slice", "aten::select", "aten::unsqueeze",
    "aten::squeeze", "aten::permute", "aten::detach", "aten::detach_", "aten::alias", "aten::resize_",
    "aten::_reshape_alias", "aten::lift_fresh", "aten::set_", "aten::narrow", "aten::view_as",
    "aten::result_type", "aten::unbind", "aten::split", "aten::chunk", "aten::_local_scalar_dense",
    "aten::item", "aten::is_nonzero", "aten::reshape", "aten::flatten", "aten::contiguous",
    "aten::_has_compatible_shallow_copy_type", "aten::_nested_tensor_from_mask_left_aligned",
    "aten::resolve_conj", "aten::resolve_neg", "aten::to", "aten::type_as", "aten::numpy_T",
    "aten::empty_like", "aten::zeros_like", "aten::ones_like", "aten::new_empty", "aten::new_empty_strided",
}


def launches_kernel(name):
    """Whether a leaf op would launch a kernel: an ATen op (autograd nodes and Python
    records that called none do nothing on the device) that is not a view or allocation."""
    return name.startswith("aten::") and name not in NO_KERNEL


def multi_tensor(name):
    """Foreach and fused ops: on a GPU a few launches for the whole list of tensors, on the
    CPU a loop that may dispatch an op per tensor; counted as one, their children not."""
    return name.startswith("aten::_foreach_") or name.startswith("aten::_fused_")


def kernel_ops(cpu_ops):
    """The ops that would launch a kernel on a GPU: per thread, ops nest by time; an op counts
    when nothing it called counts (so `aten::linear` gives its `aten::addmm`, and `aten::add_`
    counts itself when all it called was a scalar's conversion); a multi-tensor op counts
    once for everything it called; views, allocations and scalar conversions never count."""
    threads = collections.defaultdict(list)
    for e in cpu_ops:
        threads[(e.get("pid"), e.get("tid"))].append(e)
    counted = []

    def close(node):
        e, below = node["event"], node["below"]
        if multi_tensor(e["name"]):
            return [e]
        if below:
            return below
        return [e] if launches_kernel(e["name"]) and not scalar_copy(e) else []

    for evs in threads.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []
        for e in evs:
            while stack and stack[-1]["end"] <= e["ts"]:
                done = close(stack.pop())
                (stack[-1]["below"] if stack else counted).extend(done)
            stack.append({"end": e["ts"] + e["dur"], "event": e, "below": []})
        while stack:
            done = close(stack.pop())
            (stack[-1]["below"] if stack else counted).extend(done)
    return counted


def scalar_copy(e):
    """A conversion of a 0-dim tensor (a wrapped Python number converted for a CPU op): a GPU
    kernel takes such a scalar as an argument, so it launches nothing. Needs the trace's
    input shapes (record_shapes)."""
    dims = (e.get("args") or {}).get("Input Dims")
    tensors = [d for d in dims or [] if isinstance(d, list)]
    return e["name"] in ("aten::copy_", "aten::_to_copy") and bool(tensors) and all(d == [] for d in tensors)


def summarise(events, steps=None):
    kernels = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and "dur" in e]
    runtime = [e for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver") and "dur" in e]
    cpu_ops = [e for e in events if e.get("cat") == "cpu_op" and "dur" in e]
    per = (lambda x: x / steps) if steps else (lambda x: x)
    out = {"events": len(events), "steps": steps}
    if kernels:
        spans = [(e["ts"], e["ts"] + e["dur"]) for e in kernels]
        span = max(e for _, e in spans) - min(s for s, _ in spans)
        busy = union_length(spans)
        casts = [e for e in kernels if "copy_kernel" in e["name"] or "_to_copy" in e["name"]]
        out.update(
            kernels=per(len(kernels)),
            kernel_ms=per(sum(e["dur"] for e in kernels) / 1000),
            gpu_busy_ms=per(busy / 1000),
            gpu_span_ms=per(span / 1000),
            gpu_busy_fraction=busy / span if span else None,
            cast_kernels=per(len(casts)),
            cast_ms=per(sum(e["dur"] for e in casts) / 1000),
            top_kernels=[
                {"name": n[:90], "count": per(c), "ms": per(d / 1000)} for n, c, d in tally(kernels)[:10]
            ],
        )
    if runtime:
        most_called = sorted(tally(runtime), key=lambda t: -t[1])[:8]
        out["runtime_calls"] = {n: {"count": per(c), "ms": per(d / 1000)} for n, c, d in most_called}
    if cpu_ops and not kernels:
        compute = kernel_ops(cpu_ops)
        casts = [e for e in cpu_ops if e["name"] == "aten::_to_copy" and not scalar_copy(e)]
        out.update(
            kernel_like_ops=per(len(compute)),
            casts=per(len(casts)),
            top_kernel_like=[{"name": n[:60], "count": per(c), "ms": per(d / 1000)} for n, c, d in sorted(tally(compute), key=lambda t: -t[1])[:12]],
        )
    if cpu_ops:
        out["cpu_ops"] = per(len(cpu_ops))
        most_called = sorted(tally(cpu_ops), key=lambda t: -t[1])[:8]
        out["top_cpu_ops"] = [{"name": n[:60], "count": per(c), "ms": per(d / 1000)} for n, c, d in most_called]
    return out


def markdown(s, tag):
    unit = "per step" if s.get("steps") else "in all"
    lines = [f"#### {tag}: {unit}"]
    if "kernels" in s:
        frac = s["gpu_busy_fraction"]
        lines.append(
            f"- GPU kernels {s['kernels']:.0f} ({s['kernel_ms']:.2f} ms summed); GPU busy {s['gpu_busy_ms']:.2f} of "
            f"{s['gpu_span_ms']:.2f} ms ({100 * frac:.0f} %); dtype conversions {s['cast_kernels']:.0f} kernels, {s['cast_ms']:.2f} ms"
        )
        for k in s["top_kernels"][:6]:
            lines.append(f"  - {k['ms']:.3f} ms, {k['count']:.1f}×: `{k['name']}`")
    if "runtime_calls" in s:
        lines.append("- CUDA runtime: " + ", ".join(f"{n} {v['count']:.0f}× {v['ms']:.2f} ms" for n, v in s["runtime_calls"].items()))
    if "kernel_like_ops" in s:
        lines.append(f"- ops that would launch a kernel {s['kernel_like_ops']:.0f}; dtype conversions {s['casts']:.0f}")
        lines.append("  - " + ", ".join(f"{o['name']} {o['count']:.0f}×" for o in s["top_kernel_like"]))
    if "cpu_ops" in s:
        lines.append(f"- CPU ops {s['cpu_ops']:.0f}; most called: " + ", ".join(f"{o['name']} {o['count']:.0f}×" for o in s["top_cpu_ops"][:5]))
    return "\n".join(lines)


def main():
    argv = sys.argv[1:]
    steps, tag = None, argv[0]
    if "--steps" in argv:
        steps = float(argv[argv.index("--steps") + 1])
    if "--tag" in argv:
        tag = argv[argv.index("--tag") + 1]
    with open(argv[0]) as f:
        events = json.load(f)["traceEvents"]
    s = summarise(events, steps)
    s["tag"] = tag
    print(json.dumps(s))
    print(markdown(s, tag))


if __name__ == "__main__":
    main()

# SPDX-License-Identifier: MIT
"""Per-call cost of the Python layer at decode sizes: moescatter.compat's
ep_scatter and ep_gather (and the plain scatter/gather) against the same C
call made through ctypes with a prepared struct, and the device time.

    PYTHONPATH=python python3 python/bench_overhead.py [--device cuda]
        [--tokens 128] [--top-k 8] [--experts 32] [--hidden 7168]

For each function: host us/call (a burst of calls with no wait in between:
what the caller's thread spends), the bare ctypes call's host us/call, the
difference (what the Python layer adds: the target is under 10 us at decode
sizes), and device us/call from CUDA events around a burst.

Two more columns make the difference harder to fool. "paired": the
wrapper and the bare call alternate, each alone on an idle device (the
device is waited for between calls, outside the timed part), and the
column is the median of (wrapper - bare) over the pairs, so that a busy
launch queue or a slow moment of the host counts on both sides. "python
only": the wrapper's host time with the library's function replaced by
one that returns at once, so nothing but the Python layer runs (the
replacement costs one Python call more than nothing).
"""
import argparse
import ctypes
import json
import time

import torch

import moescatter
from moescatter import compat, _lib, _ops


def host_us(fn, iters, sync):
    fn()
    sync()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        t1 = time.perf_counter()
        sync()
        best = min(best, (t1 - t0) / iters * 1e6)
    return best


def paired_us(fn, base, iters, sync):
    """Median over iters pairs of (fn's host time - base's), each call made
    with the device idle."""
    diffs = []
    for i in range(iters):
        pair = (fn, base) if i % 2 == 0 else (base, fn)
        t = {}
        for f in pair:
            sync()
            t0 = time.perf_counter()
            f()
            t[f] = time.perf_counter() - t0
        diffs.append(t[fn] - t[base])
    sync()
    diffs.sort()
    return diffs[len(diffs) // 2] * 1e6


class _NoCall:
    """The library with one function that returns MOES_OK at once. That
    function is an attribute of its own, so that reading it costs what
    reading the real one does; only the others go through __getattr__."""

    def __init__(self, lib, name):
        self._lib = lib
        setattr(self, name, _no_call)

    def __getattr__(self, attr):
        return getattr(self._lib, attr)


def _no_call(*args):
    return 0


def python_only_us(fn, c_name, iters, sync):
    real = _lib.LIB
    _lib.LIB = _ops.LIB = _NoCall(real, c_name)
    try:
        return host_us(fn, iters, sync)
    finally:
        _lib.LIB = _ops.LIB = real


def device_us(fn, iters, device):
    if device != "cuda":
        return None
    start, end = torch.cuda.Event(True), torch.cuda.Event(True)
    fn()
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters * 1e3


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available()
                   else "cpu")
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--experts", type=int, default=32,
                   help="local experts (256 over 8 ranks: 32)")
    p.add_argument("--hidden", type=int, default=7168)
    p.add_argument("--iters", type=int, default=50,
                   help="calls per burst: few enough that the kernels they "
                   "launch fit in the launch queue, so that the host never "
                   "waits for the GPU inside a burst")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args()
    dev = a.device
    n, k, e, h = a.tokens, a.top_k, a.experts, a.hidden
    fp8 = getattr(torch, "float8_e4m3fn", None)
    xdt = fp8 if (fp8 is not None and dev == "cuda") else torch.bfloat16
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, h, generator=gen).to(xdt).to(dev)
    xs = torch.rand(n, h // 128, generator=gen).to(dev)
    ids = torch.randint(0, e, (n, k), generator=gen).int().to(dev)
    w = torch.rand(n, k, generator=gen).to(dev)
    m = moescatter.scatter_capacity(n, k, e)
    out = torch.empty(m, h, dtype=xdt, device=dev)
    out_s = torch.empty(m, h // 128, device=dev)
    m_idx = torch.empty(m, dtype=torch.int32, device=dev)
    oi = torch.empty(n, k, dtype=torch.int32, device=dev)
    start = torch.empty(e, dtype=torch.int32, device=dev)
    counts = torch.empty(e, dtype=torch.int32, device=dev)
    y = torch.randn(m, h, generator=gen).to(torch.bfloat16).to(dev)
    res = torch.empty(n, h, dtype=torch.bfloat16, device=dev)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

    def ep_scatter():
        compat.ep_scatter(x, xs, ids, counts, start, out, out_s, m_idx, oi)

    def ep_gather():
        compat.ep_gather(y, ids, w, oi, res)

    def scatter():
        moescatter.scatter(x, ids, e, xs)

    def gather():
        moescatter.gather(y, oi, w)

    # The bare C calls: the structs the last compat calls filled, passed
    # again through ctypes, with the stream already set.
    ctx = _ops._context(_ops.A.space_of(x, "x"))
    ep_scatter()
    routing = _lib.Routing.from_buffer_copy(ctx.routing)
    sargs = _lib.ScatterArgs.from_buffer_copy(ctx.scatter_args)
    ep_gather()
    gargs = _lib.GatherArgs.from_buffer_copy(ctx.gather_args)
    lib, handle = _lib.LIB, ctx.handle
    r_ref, s_ref, g_ref = (ctypes.byref(routing), ctypes.byref(sargs),
                           ctypes.byref(gargs))

    def c_scatter():
        lib.moes_scatter(handle, r_ref, s_ref)

    def c_gather():
        lib.moes_gather(handle, g_ref)

    rows = []
    for name, fn, base, c_name in (
            ("compat.ep_scatter", ep_scatter, c_scatter, "moes_scatter"),
            ("compat.ep_gather", ep_gather, c_gather, "moes_gather"),
            ("scatter", scatter, c_scatter, "moes_scatter"),
            ("gather", gather, c_gather, "moes_gather")):
        t_py = host_us(fn, a.iters, sync)
        t_c = host_us(base, a.iters, sync)
        t_pair = paired_us(fn, base, 4 * a.iters, sync)
        t_only = python_only_us(fn, c_name, a.iters, sync)
        t_dev = device_us(fn, a.iters, dev)
        rows.append(dict(function=name, host_us=t_py, bare_ctypes_us=t_c,
                         python_layer_us=t_py - t_c, paired_us=t_pair,
                         python_only_us=t_only, device_us=t_dev))
    moescatter.synchronize()
    info = moescatter.backend_info(dev)
    print("%s on %s (%s), N=%d K=%d E=%d H=%d, %s rows, torch %s, "
          "caller workspace: %s" % (
              info["version"], dev, info["device_name"], n, k, e, h,
              str(xdt).replace("torch.", ""), torch.__version__,
              info["caller_workspace"]))
    print("%-18s %10s %12s %14s %8s %12s %10s" % (
        "function", "host us", "bare ctypes", "python layer", "paired",
        "python only", "device us"))
    for r in rows:
        print("%-18s %10.2f %12.2f %14.2f %8.2f %12.2f %10s" % (
            r["function"], r["host_us"], r["bare_ctypes_us"],
            r["python_layer_us"], r["paired_us"], r["python_only_us"],
            "-" if r["device_us"] is None else "%.2f" % r["device_us"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(device=dev, tokens=n, top_k=k, experts=e,
                           hidden=h, torch=torch.__version__, rows=rows),
                      f, indent=1)


if __name__ == "__main__":
    main()

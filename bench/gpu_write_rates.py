# SPDX-License-Identifier: MIT
"""gpu_write_rates.py - what a GPU's memory does for the scatter's pattern.

Times, with CUDA events (medians of 40, after 5 warm-up runs), on the
first CUDA device: a 1 GiB copy; writing the 235 MB of DeepSeek-V3's
prefill rows (32768 rows of 7 KiB) by memset, by a fill kernel, and by a
kernel that stores whole rows in order and in a random order; then the
scatter's fan-out alone, with no routing: 4096 token rows of 7 KiB read
from memory, each stored to 8 rows (random ones, or 8 streams in token
order). The scatter's copy does this fan-out and must also wait for its
routing; bench/NOTES.md (v17) reads the figures. Then the same floor for
the other prefill cases: EP8 prefill's copy alone (32768 received tokens,
experts 0..31 of 256 local: only tokens with a local choice read, each
stored to its local rows), and a plain gather in the peers' form (a
program a token and 1,024 columns, the K rows summed in fp32 and stored as
bf16, no checks) at prefill 4096 and EP8 prefill (bench/NOTES.md, v18).
Last, what reading alone moves (a sum over 1 GiB), the plain gather at
16384 tokens, and the fan-out and plain gather of the Qwen3 and Mixtral
presets at 4096 tokens, timed behind a 256 MiB fill as `moescatter
bench` times its calls (bench/NOTES.md, v23), and last the plain gathers
of DeepSeek-V3's prefill rows behind that fill too (v26).

Needs PyTorch with CUDA and Triton:

    python3 bench/gpu_write_rates.py
"""
import torch, sys, traceback
import triton, triton.language as tl
dev = 'cuda'
torch.manual_seed(0)

# With CLEAR set (a tensor), each timed call comes behind a fill of it, as
# `moescatter bench` times its calls: the L2 then holds the fill's dirty
# lines, not the call's inputs.
CLEAR = None

def med(fn, iters=40):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    s = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    e = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for i in range(iters):
        if CLEAR is not None:
            CLEAR.fill_(i & 0x7F)
        s[i].record(); fn(); e[i].record()
    torch.cuda.synchronize()
    ts = sorted(s[i].elapsed_time(e[i]) for i in range(iters))
    return ts[len(ts) // 2] * 1000.0

@triton.jit
def store_rows(out_ptr, order_ptr, ROW: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    r = tl.load(order_ptr + pid).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    v = (offs + pid).to(tl.int32)
    tl.store(out_ptr + r * ROW + offs, v, mask=offs < ROW)

# Program (p, c) reads chunk c of token t's row (BLOCK words) and stores
# it to the token's K rows; t is p, or with TOKENS the p-th entry of
# tok_ptr (EP8: the tokens with a local choice), whose idx -1 (a remote
# expert) is skipped. A grid of (programs, 1) with BLOCK >= ROW is a
# program a token.
@triton.jit
def fan_out(x_ptr, out_ptr, idx_ptr, tok_ptr, K: tl.constexpr, ROW: tl.constexpr,
            BLOCK: tl.constexpr, TOKENS: tl.constexpr):
    if TOKENS:
        t = tl.load(tok_ptr + tl.program_id(0)).to(tl.int64)
    else:
        t = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < ROW
    v = tl.load(x_ptr + t * ROW + offs, mask=m)
    for k in tl.static_range(K):
        r = tl.load(idx_ptr + t * K + k).to(tl.int64)
        if TOKENS:
            tl.store(out_ptr + r * ROW + offs, v, mask=m & (r >= 0))
        else:
            tl.store(out_ptr + r * ROW + offs, v, mask=m)

# A plain gather: program (t, c) sums columns [c * BLOCK, ...) of token t's
# valid rows (idx >= 0) with their weights in fp32, stores bf16.
@triton.jit
def plain_gather(y_ptr, idx_ptr, w_ptr, out_ptr, K: tl.constexpr, H: tl.constexpr, BLOCK: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < H
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for k in tl.static_range(K):
        r = tl.load(idx_ptr + t * K + k).to(tl.int64)
        w = tl.load(w_ptr + t * K + k)
        if r >= 0:
            acc += w * tl.load(y_ptr + r * H + offs, mask=m).to(tl.float32)
    tl.store(out_ptr + t * H + offs, acc.to(tl.bfloat16), mask=m)

def run(name, fn, nbytes):
    try:
        us = med(fn)
        print(f"{name:58s} {us:8.1f} us  {nbytes/us/1e3:7.0f} GB/s", flush=True)
    except Exception:
        print(name, "FAILED"); traceback.print_exc(limit=2)

print(torch.cuda.get_device_name(), torch.__version__, triton.__version__)
a = torch.empty(1 << 30, dtype=torch.uint8, device=dev); b = torch.empty_like(a)
a.fill_(1)
run("copy 1 GiB (torch copy_, read + written)", lambda: b.copy_(a), 2 * (1 << 30))
del a, b
ROWB = 7168; ROW = ROWB // 4; NR = 32768
out = torch.empty(NR * ROW, dtype=torch.int32, device=dev)
run("memset 235 MB (zero_)", lambda: out.zero_(), NR * ROWB)
run("fill kernel 235 MB (fill_(7))", lambda: out.fill_(7), NR * ROWB)
seq = torch.arange(NR, dtype=torch.int32, device=dev)
perm = torch.randperm(NR, device=dev).to(torch.int32)
run("Triton: 32768 rows of 7 KiB stored in order", lambda: store_rows[(NR,)](out, seq, ROW=ROW, BLOCK=2048), NR * ROWB)
run("Triton: the same rows in random order", lambda: store_rows[(NR,)](out, perm, ROW=ROW, BLOCK=2048), NR * ROWB)
T = 4096; K = 8
x = torch.randint(0, 1 << 30, (T * ROW,), dtype=torch.int32, device=dev)
idx = torch.randperm(NR, device=dev).to(torch.int32)
idx_sorted_k = torch.arange(NR, dtype=torch.int32, device=dev).view(K, T).t().contiguous().view(-1)
run("Triton fan-out: 4096 tokens x 8 random rows (a program a token)",
    lambda: fan_out[(T, 1)](x, out, idx, None, K=K, ROW=ROW, BLOCK=2048, TOKENS=False), NR * ROWB + T * ROWB)
run("Triton fan-out: 8 rows each in 8 streams in token order",
    lambda: fan_out[(T, 1)](x, out, idx_sorted_k, None, K=K, ROW=ROW, BLOCK=2048, TOKENS=False), NR * ROWB + T * ROWB)
run("Triton fan-out, 2 chunks a token, random rows",
    lambda: fan_out[(T, 2)](x, out, idx, None, K=K, ROW=ROW, BLOCK=1024, TOKENS=False), NR * ROWB + T * ROWB)
del x, out, idx, idx_sorted_k

# EP8 prefill: 32768 tokens, 8 distinct experts of 256 each, 0..31 local.
T8 = 32768; E = 256; E_LOCAL = 32
experts = torch.rand(T8, E, device=dev).topk(K, dim=1).indices
local = experts < E_LOCAL
n_local = int(local.sum())
idx8 = torch.full((T8 * K,), -1, dtype=torch.int32, device=dev)
idx8[local.view(-1)] = torch.randperm(n_local, device=dev).to(torch.int32)
tok8 = local.any(dim=1).nonzero().view(-1).to(torch.int32)
n_tok8 = tok8.numel()
x8 = torch.randint(0, 1 << 30, (T8 * ROW,), dtype=torch.int32, device=dev)
out8 = torch.empty(n_local * ROW, dtype=torch.int32, device=dev)
print(f"EP8 prefill: {n_tok8} of {T8} tokens with a local choice, {n_local} local rows")
run("Triton: EP8 prefill copy alone (rows of 7 KiB, no scales)",
    lambda: fan_out[(n_tok8, 1)](x8, out8, idx8, tok8, K=K, ROW=ROW, BLOCK=2048, TOKENS=True),
    (n_tok8 + n_local) * ROWB)
del x8, out8

# Plain gathers, bf16 rows of h in and out (DeepSeek-V3's 7168 unless
# told), k rows a token, fp32 weights, `block` columns a program.
def gather_case(name, tokens, idx, y_rows, h=7168, k=K, block=1024):
    y = torch.randn(y_rows, h, device=dev).to(torch.bfloat16)
    w = torch.rand(tokens * k, device=dev)
    o = torch.empty(tokens, h, dtype=torch.bfloat16, device=dev)
    valid = int((idx >= 0).sum())
    run(name, lambda: plain_gather[(tokens, triton.cdiv(h, block))](y, idx, w, o, K=k, H=h, BLOCK=block),
        (valid + tokens) * h * 2)
gather_case("Triton: plain gather, prefill 4096 (32768 rows)", T,
            torch.randperm(NR, device=dev).to(torch.int32), NR)
gather_case("Triton: plain gather, EP8 prefill 32768", T8, idx8, n_local)

# What reading alone moves: the gathers read eight rows for each one they
# write, and a copy reads one for each one it writes.
r = torch.empty(1 << 28, dtype=torch.float32, device=dev).fill_(1.0)
run("torch sum of 1 GiB of fp32 (read only)", lambda: r.sum(), 1 << 30)
del r
gather_case("Triton: plain gather, prefill 16384", 4 * T,
            torch.randperm(4 * NR, device=dev).to(torch.int32), 4 * NR)

# The other presets at 4096 tokens (bf16 rows, no scales), timed as
# `moescatter bench` times them: behind a fill of 256 MiB. Their fan-out
# alone (each token's row stored to its K rows, no routing) and a plain
# gather of the same shape: the floors of the preset rows of
# bench-on-gpu.sh. DeepSeek-V3's fan-out again, for comparison.
CLEAR = torch.empty(1 << 28, dtype=torch.uint8, device=dev)
c = torch.empty(1 << 30, dtype=torch.uint8, device=dev); d = torch.empty_like(c)
c.fill_(1)
run("behind a fill: copy 1 GiB", lambda: d.copy_(c), 2 * (1 << 30))
del c, d
# Each case: its row's bytes in x, K, the fan-out's block (int32 words a
# program), and the hidden size of its bf16 gather (None: no gather).
for name, row_bytes, k, blk, h in (("DeepSeek-V3 (fp8 rows)", 7168, 8, 2048, None),
                                   ("Qwen3-30B-A3B", 4096, 8, 1024, 2048),
                                   ("Mixtral", 8192, 2, 2048, 4096)):
    row = row_bytes // 4  # int32 words
    rows = T * k
    x = torch.randint(0, 1 << 30, (T * row,), dtype=torch.int32, device=dev)
    out = torch.empty(rows * row, dtype=torch.int32, device=dev)
    idx = torch.randperm(rows, device=dev).to(torch.int32)
    run(f"behind a fill: fan-out, {name}, 4096 x {k}",
        lambda: fan_out[(T, 1)](x, out, idx, None, K=k, ROW=row, BLOCK=blk, TOKENS=False),
        (rows + T) * row * 4)
    del x, out
    if h is None:
        continue
    for b in (512, 1024, 2048):
        if b <= h:
            gather_case(f"behind a fill: plain gather, {name}, 4096 x {k}, {b} columns a program",
                        T, idx, rows, h=h, k=k, block=b)

# The DeepSeek-V3 gathers of the table's prefill rows behind the same fill,
# as `moescatter bench` times the library's (bench/NOTES.md, v26).
gather_case("behind a fill: plain gather, prefill 4096 (32768 rows)", T,
            torch.randperm(NR, device=dev).to(torch.int32), NR)
gather_case("behind a fill: plain gather, EP8 prefill 32768", T8, idx8, n_local)
gather_case("behind a fill: plain gather, prefill 4096, 2048 columns a program", T,
            torch.randperm(NR, device=dev).to(torch.int32), NR, block=2048)

# SPDX-License-Identifier: MIT
"""count, scatter and gather over the C library: arguments checked and
turned into the library's structs, outputs allocated where the caller gave
none, the call made on the context of the arrays' device."""
import ctypes
import operator
import threading
from typing import NamedTuple, Optional, Any

from . import _lib
from . import _arrays as A
from ._lib import LIB, ArgumentError

_arg_error = _lib.argument_error


def _int64(value, name):
    """value as a Python int that the library's int64 fields hold:
    ctypes would store a larger one modulo 2**64. Only integers (Python,
    NumPy, a one-element integer tensor): int() would truncate 3.9 to 3
    and read "4" as 4, and the call would go on with a size nobody gave."""
    try:
        v = operator.index(value)
    except TypeError:
        raise _arg_error("%s = %r is not an integer" % (name, value)) \
            from None
    if not -2 ** 63 <= v < 2 ** 63:
        raise _arg_error("%s = %d does not fit a 64-bit integer" % (name, v))
    return v

torch = A.torch

LAYOUTS = {"contiguous": _lib.LAYOUT_CONTIGUOUS,
           "grouped": _lib.LAYOUT_GROUPED,
           "masked": _lib.LAYOUT_MASKED}
SCALE_FORMATS = {"fp32": _lib.SCALES_FP32, "ue8m0": _lib.SCALES_UE8M0}
_INDEX = (_lib.DTYPE_INT32, _lib.DTYPE_INT64)
_FLOAT = (_lib.DTYPE_BF16, _lib.DTYPE_FP16, _lib.DTYPE_FP32)
_ROWS = (_lib.DTYPE_FP8_E4M3, _lib.DTYPE_FP8_E5M2) + _FLOAT


class ScatterResult(NamedTuple):
    """What ``scatter`` returns; a field is None where the layout has none.

    out         rows in their layout: [capacity, H], or [E, C, H] (masked);
                None for an index-only scatter (x=None)
    out_scales  the scales of those rows (fp32, or UE8M0 packed four to an
                int32 word), [rows, S or ceil(S/4)] or [E, C, ...]; None
                without x_scales
    out_index   [N, K]: the row of each (t, k), -1 where it was not placed
    m_indices   [capacity]: the expert of each row, -1 on padding and the
                tail (contiguous only)
    counts      [E]: rows of each expert (before any drop)
    expert_start, expert_end   [E]: the first row of each expert and the end
                of its aligned block (e*C and e*C + C when masked); with
                ``unpadded_end`` the end of its real rows instead,
                expert_start + counts (masked: + masked_m)
    masked_m    [E]: min(counts, C) (masked only)
    n_dropped   a 0-dimensional int64: choices dropped (masked only)
    row_source  [capacity], or [E, C] (masked): t*K + k of the choice on
                each row, ``row_source_pad`` on rows that hold none; None
                unless asked for with ``row_source=True``
    """
    out: Optional[Any]
    out_scales: Optional[Any]
    out_index: Any
    m_indices: Optional[Any]
    counts: Any
    expert_start: Any
    expert_end: Any
    masked_m: Optional[Any]
    n_dropped: Optional[Any]
    row_source: Optional[Any] = None


# ---------------------------------------------------------------- contexts

if torch is not None and hasattr(torch._C, "_cuda_getCurrentRawStream"):
    _raw_stream = torch._C._cuda_getCurrentRawStream
else:
    def _raw_stream(device):
        return torch.cuda.current_stream(device).cuda_stream

if torch is not None and hasattr(torch._C, "_cuda_isCurrentStreamCapturing"):
    _capturing = torch._C._cuda_isCurrentStreamCapturing
else:
    def _capturing():
        return False


def _context(space):
    if space < 0:  # torch CPU tensors and NumPy arrays
        return _lib.context(_lib.BACKEND_CPU, 0)
    return _lib.context(_lib.BACKEND_CUDA, space)


def _set_stream(ctx):
    """Queue the next call on torch's current stream of the device."""
    stream = _raw_stream(ctx.device)
    if stream != ctx.stream:
        st = LIB.moes_set_stream(ctx.handle, stream)
        if st != _lib.MOES_OK:
            ctx.fail(st, "moes_set_stream")
        ctx.stream = stream


def _hand_workspace(ctx, n_tokens, top_k, n_experts):
    """Give the library its scratch memory from torch's caching allocator,
    where the library has the hand-over API; returns the buffer, which must
    live until the call has been queued.

    Outside a CUDA graph capture one buffer per stream is kept and grown:
    the allocator orders its reuse on that stream. Inside a capture each
    call takes a fresh buffer from the allocator, which then belongs to the
    graph's private pool for as long as the graph lives, so no buffer that
    a graph replays into is ever freed or grown under it."""
    key = (n_tokens, top_k, n_experts)
    need = ctx.ws_sizes.get(key)
    if need is None:
        size = ctypes.c_int64()
        st = LIB.moes_workspace_size(ctx.handle, n_tokens, top_k, n_experts,
                                     ctypes.byref(size))
        if st != _lib.MOES_OK:
            ctx.fail(st, "moes_workspace_size")
        need = size.value
        if len(ctx.ws_sizes) > 1024:
            ctx.ws_sizes.clear()
        ctx.ws_sizes[key] = need
    if need <= 0:
        return None
    capturing = _capturing()
    if capturing:
        buf = torch.empty(need, dtype=torch.uint8,
                          device=torch.device("cuda", ctx.device))
    else:
        buf = ctx.workspace.get(ctx.stream)
        if buf is None or buf.numel() < need:
            buf = torch.empty(need, dtype=torch.uint8,
                              device=torch.device("cuda", ctx.device))
            ctx.workspace[ctx.stream] = buf
    given = (buf.data_ptr(), buf.numel())
    if given != ctx.ws_given:
        ctx.ws_given = None
        st = LIB.moes_set_workspace(ctx.handle, given[0], given[1])
        if st != _lib.MOES_OK:
            ctx.fail(st, "moes_set_workspace")
        ctx.ws_given = given
    if not capturing:
        ctx.ws_memo = (ctx.stream, n_tokens, top_k, n_experts, ctx.ws_given,
                       buf)
    return buf


def _enter_routing(ctx, n_tokens, top_k, n_experts):
    """_enter(ctx, n_tokens, top_k, n_experts, workspace=True), with a
    shortcut for the call that repeats the last one (decode steps): the
    same stream, the same sizes, the library still holding the buffer that
    call handed it, and no capture going on need nothing new."""
    memo = ctx.ws_memo
    if memo is not None and memo[1] == n_tokens and memo[2] == top_k and \
            memo[3] == n_experts and memo[4] is ctx.ws_given and \
            memo[0] == ctx.stream == _raw_stream(ctx.device) and \
            not _capturing():
        return memo[5]
    ctx.ws_memo = None
    return _enter(ctx, n_tokens, top_k, n_experts, workspace=True)


def _enter(ctx, n_tokens=0, top_k=1, n_experts=1, workspace=False):
    """Sets the stream (CUDA) and, for routing calls, the workspace; the
    caller holds ctx.lock."""
    if ctx.backend == _lib.BACKEND_CUDA:
        _set_stream(ctx)
        if workspace and _lib.HAS_WORKSPACE_API:
            return _hand_workspace(ctx, n_tokens, top_k, n_experts)
    return None


# ---------------------------------------------------------------- arguments


def _bad(status, message, function):
    raise ArgumentError(status, message, function)


def _routing(ctx, topk_ids, num_experts, expert_map, space, fn):
    """Fills ctx.routing; returns the arrays it points into (they must live
    until the call returns) and (N, K)."""
    ids, p, n, k, rs, code = A.matrix_in(topk_ids, "topk_ids", _INDEX, space)
    r = ctx.routing
    r.n_tokens = n
    r.top_k = k
    r.ids = p
    r.ids_dtype = code
    r.ids_stride = rs
    r.n_experts = num_experts
    if expert_map is not None:
        emap, mp, e_global, _ = A.vector_in(expert_map, "expert_map",
                                            (_lib.DTYPE_INT32,), space)
        if e_global == 0:
            _bad(_lib.MOES_ERR_INVALID_SIZE,
                 "expert_map is empty: it needs one entry per global expert",
                 fn)
        r.expert_map = mp
        r.n_experts_global = e_global
    else:
        emap = None
        r.expert_map = None
        r.n_experts_global = num_experts
    return (ids, emap), n, k


def capacity_formula(masked, n, k, e, alignment, minimum=min):
    """moes_scatter_capacity's bound: N*K rows per expert when masked,
    else roundup(N*K + min(E, N*K) * (A - 1), A). minimum is min, or
    torch.sym_min where the sizes are symbolic (torch.compile)."""
    nk = n * k
    if masked:
        return nk
    return (nk + minimum(e, nk) * (alignment - 1) + alignment - 1) \
        // alignment * alignment


def _capacity(ctx_handle, layout, n, k, e, alignment):
    # The formula, without the call, for sizes the library accepts;
    # anything else goes to the library for its error.
    if n >= 0 and k >= 1 and e >= 1 and alignment >= 1 and \
            layout in (_lib.LAYOUT_CONTIGUOUS, _lib.LAYOUT_GROUPED,
                       _lib.LAYOUT_MASKED):
        cap = capacity_formula(layout == _lib.LAYOUT_MASKED, n, k, e,
                               alignment)
        if cap <= _INT64_MAX:
            return cap
    cap = ctypes.c_int64()
    st = LIB.moes_scatter_capacity(ctx_handle, layout, n, k, e, alignment,
                                   ctypes.byref(cap))
    if st != _lib.MOES_OK:
        raise _lib.make_error(st, _lib.last_error(ctx_handle) if ctx_handle
                              else "", "moes_scatter_capacity")
    return cap.value


# The _torch_ops module once it has registered the operators (set by the
# package's __init__), else None: one test per call when torch is old.
compile_hook = None


def _no_grad_wanted(fn, **tensors):
    """The calls compute no gradient: a tensor that asks for one (with
    grad mode on) is refused, rather than an output that silently
    detaches it from the graph."""
    if torch is None or not torch.is_grad_enabled():
        return
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.requires_grad:
            raise _arg_error("%s requires grad, and %s computes no gradient: "
                             "call it under torch.no_grad() or "
                             "torch.inference_mode(), or pass %s.detach()"
                             % (name, fn, name))


def _maybe_compiled(name):
    """Under torch.compile the registered op is traced instead of the
    ctypes call (see _torch_ops)."""
    hook = compile_hook
    if hook is not None and hook.is_compiling():
        return getattr(torch.ops.moescatter, name)
    return None


# ---------------------------------------------------------------- count


def count(topk_ids, num_experts, *, expert_map=None, dtype=None):
    """Rows of each local expert: ``counts[e]`` = the number of (t, k) whose
    local expert is ``e`` (``expert_map[topk_ids[t][k]]`` with a map, else
    the id itself); ids of -1, and ids the map sends to -1, count nowhere.

    ``topk_ids`` is [N, K] int32 or int64, ``expert_map`` int32 [E_global]
    or None, ``dtype`` the counts' dtype (int32, the default, or int64).
    Returns an [num_experts] array of the ids' kind and device.
    Raises ``moescatter.Error`` (a ValueError) for ids or map entries out of
    range; on CUDA those are found by the kernels: see ``synchronize``.
    """
    code = A.index_code(dtype, "dtype")
    op = _maybe_compiled("count")
    if op is not None:
        return op(topk_ids, num_experts, expert_map, code == _lib.DTYPE_INT64)
    space = A.space_of(topk_ids, "topk_ids")
    num_experts = _int64(num_experts, "num_experts")
    ctx = _context(space)
    counts = A.empty(space, (max(num_experts, 0),), code, "counts")
    with ctx.lock:
        keep, n, k = _routing(ctx, topk_ids, num_experts, expert_map, space,
                              "moes_count")
        ws = _enter(ctx, n, k, max(num_experts, 1), workspace=True)
        st = LIB.moes_count(ctx.handle, ctx.routing_ref, A.ptr(counts),
                            code)
        if st != _lib.MOES_OK:
            ctx.fail(st, "moes_count")
    del keep, ws
    return counts


def distinct_experts(topk_ids, num_experts, *, expert_map=None, dtype=None):
    """Each token's distinct local experts: row ``t`` of the result holds
    the local experts of ``topk_ids[t]`` (through ``expert_map`` when
    given) once each, smallest first, then -1 up to K entries; ids of -1,
    and ids the map sends to -1, are nowhere.

    With a map from experts to ranks (or devices) the rows are the ranks
    each token must be sent to, once each, and as ``topk_ids`` of a scatter
    with ``num_experts`` ranks they send it there once.

    ``topk_ids`` is [N, K] int32 or int64, ``expert_map`` int32 [E_global]
    or None, ``dtype`` the result's (int32, the default, or int64).
    Returns an [N, K] array of the ids' kind and device. Raises
    ``moescatter.Error`` (a ValueError) for ids or map entries out of
    range; on CUDA those are found by the kernels: see ``synchronize``.
    """
    code = A.index_code(dtype, "dtype")
    if not hasattr(LIB, "moes_distinct_experts"):
        raise NotImplementedError(
            "the loaded libmoescatter has no moes_distinct_experts (0.3 and "
            "later do)")
    space = A.space_of(topk_ids, "topk_ids")
    num_experts = _int64(num_experts, "num_experts")
    ctx = _context(space)
    shape = A.shape(topk_ids)
    if len(shape) != 2:
        _bad(_lib.MOES_ERR_INVALID_SIZE,
             "topk_ids must be [N, K], got shape %s" % (shape,),
             "moes_distinct_experts")
    out = A.empty(space, shape, code, "out")
    with ctx.lock:
        keep, n, k = _routing(ctx, topk_ids, num_experts, expert_map, space,
                              "moes_distinct_experts")
        ws = _enter(ctx, n, k, max(num_experts, 1), workspace=True)
        st = LIB.moes_distinct_experts(ctx.handle, ctx.routing_ref,
                                       A.ptr(out), code, 0)
        if st != _lib.MOES_OK:
            ctx.fail(st, "moes_distinct_experts")
    del keep, ws
    return out


# ---------------------------------------------------------------- scatter


def scatter(x, topk_ids, num_experts, x_scales=None, *, layout="contiguous",
            alignment=128, expert_map=None, capacity=None,
            scale_format="fp32", scale_block=128, zero_padding=False,
            label_padding=False, index_dtype=None, scales_mn_major=False,
            row_source=False, row_source_pad=-1, unpadded_end=False):
    """Copies each token's row once per chosen expert, so that each expert's
    rows are contiguous, in ascending t*K + k order (deterministic).

    x            [N, H] rows: fp8 (e4m3, e5m2), bf16, fp16 or fp32; copied
                 byte for byte. None: an index-only scatter, which copies
                 nothing and computes every index output (out_index,
                 m_indices, row_source, counts, expert_start, expert_end,
                 masked_m, n_dropped) as it would with rows, for GEMMs that
                 read x in place through row_source; ``out`` is then None,
                 x_scales must be None, N and the device come from
                 topk_ids, and zero_padding with a capacity above 0 is
                 MOES_ERR_INVALID_FLAGS (there are no rows to zero)
    topk_ids     [N, K] int32 or int64 expert ids, -1 for none
    num_experts  E, the local experts
    x_scales     optional fp32 [N, S] per-block scales, S = ceil(H /
                 scale_block), copied (scale_format="fp32") or packed as
                 UE8M0 exponent bytes, four to an int32 word ("ue8m0")
    layout       "contiguous" (expert e starts at the sum of the earlier
                 experts' counts rounded up to ``alignment``; reports
                 m_indices), "grouped" (the same rows, reported as
                 expert_start/expert_end) or "masked" (expert e owns rows
                 e*C .. e*C+C-1; the first C choices in t*K+k order are kept,
                 the others dropped and counted in n_dropped)
    expert_map   optional int32 [E_global]: global id -> local id or -1
    capacity     rows of ``out`` (contiguous, grouped) or rows per expert C
                 (masked). None: the library's bound that is never too
                 small (``scatter_capacity``), known from the shapes alone,
                 so no host synchronization is needed. For the masked
                 layout that bound is N*K rows per expert: pass a capacity.
    zero_padding   zero the data and scales of padding rows (else untouched)
    label_padding  m_indices of padding rows inside an expert's aligned
                 block say that expert instead of -1
    index_dtype  int32 (default) or int64, for every index output
    scales_mn_major  out_scales stored transposed ([S, rows] in memory,
                 returned as its [rows, S] view), the MN-major layout of
                 DeepGEMM; contiguous and grouped layouts only
    row_source   also return ``row_source``: for each row, t*K + k of the
                 choice placed there (row_source // K is the token), and
                 ``row_source_pad`` on every row that holds none (padding in
                 an aligned block, the tail up to the capacity, masked rows
                 past masked_m); [capacity], or [E, C] when masked, of the
                 index dtype
    row_source_pad  the value of those rows (default -1); it must fit the
                 index dtype (else MOES_ERR_OVERFLOW)
    unpadded_end   expert_end[e] = expert_start[e] + counts[e] (masked:
                 + masked_m[e]), the end of e's real rows, instead of the
                 end of its aligned block: the "psum" form of grouped GEMMs
                 that take each group's last row

    row_source, x=None and unpadded_end need libmoescatter 0.3 or later:
    with an older library they raise ``moescatter.Error``.

    Torch CPU tensors run on the CPU backend; CUDA tensors on the CUDA
    backend, on the tensor's device and torch.cuda.current_stream(); NumPy
    arrays on the CPU. Strided inputs are followed (inputs whose elements
    are not contiguous within a row are copied first).

    Returns a ``ScatterResult``. Raises ``moescatter.Error`` (a ValueError)
    for bad arguments, out-of-range ids or map entries and a capacity that
    is too small; then no output is written. On CUDA the last three are
    found by the kernels without a host round trip: the call returns, the
    outputs are left as they were, later calls do nothing, and
    ``moescatter.synchronize()`` raises the error.
    """
    fn = "moes_scatter"
    lay = LAYOUTS.get(layout)
    if lay is None:
        raise _arg_error("layout must be one of %s, got %r"
                         % (", ".join(LAYOUTS), layout))
    icode = A.index_code(index_dtype)
    if x is None or row_source or unpadded_end:
        row_source_pad = _check_index_only(x, x_scales, row_source,
                                           row_source_pad, unpadded_end, fn)
    _no_grad_wanted("moescatter.scatter", x=x, x_scales=x_scales)
    op = _maybe_compiled("scatter")
    if op is not None:
        return compile_hook.scatter_compiled(
            op, x, topk_ids, num_experts, x_scales, layout, alignment,
            expert_map, capacity, scale_format, scale_block, zero_padding,
            label_padding, icode, scales_mn_major, bool(row_source),
            row_source_pad if row_source else -1, bool(unpadded_end))
    if x is None:
        # Index only: N and the device are topk_ids'; no row is read, so
        # the row arguments are placeholders the library does not look at.
        space = A.space_of(topk_ids, "topk_ids")
        if topk_ids.ndim != 2:
            raise _arg_error("topk_ids must be [N, K], got shape %s"
                             % (A.shape(topk_ids),))
        n = topk_ids.shape[0]
        x_ptr, h, x_rs, xcode = None, 0, 0, _lib.DTYPE_BF16
    else:
        space = A.space_of(x, "x")
        xin, x_ptr, n, h, x_rs, xcode = A.matrix_in(x, "x", _ROWS, space)
        if h == 0:
            # An empty tensor's data pointer may be 0, which the library
            # would take for no x at all (an index-only call).
            _bad(_lib.MOES_ERR_INVALID_SIZE,
                 "x has no columns (hidden = 0); an index-only scatter "
                 "passes x=None", fn)
        A.check_space(topk_ids, "topk_ids", space)
        if topk_ids.ndim != 2 or topk_ids.shape[0] != n:
            raise _arg_error("topk_ids must be [N, K] with N = %d (the rows "
                             "of x), got shape %s" % (n, A.shape(topk_ids)))
    k = topk_ids.shape[1]
    e = _int64(num_experts, "num_experts")
    alignment = _int64(alignment, "alignment")
    scale_block = _int64(scale_block, "scale_block")
    if e < 1:
        _bad(_lib.MOES_ERR_INVALID_SIZE,
             "num_experts = %d must be at least 1" % e, fn)
    ctx = _context(space)
    if capacity is None:
        capacity = _capacity(ctx.handle, lay, n, k, e, alignment)
    capacity = _int64(capacity, "capacity")
    if capacity < 0:
        _bad(_lib.MOES_ERR_INVALID_SIZE,
             "capacity = %d is negative" % capacity, fn)
    masked = lay == _lib.LAYOUT_MASKED
    rows = e * capacity if masked else capacity
    # The data's leading shape: [rows], or [E, C] when masked.
    lead = (e, capacity) if masked else (rows,)

    out = A.empty(space, lead + (h,), xcode, "out") \
        if x is not None else None
    out_scales = None
    sfmt = _lib.SCALES_NONE
    srs = scs = 0
    if x_scales is not None:
        sfmt = SCALE_FORMATS.get(scale_format)
        if sfmt is None:
            raise _arg_error("scale_format must be 'fp32' or 'ue8m0', got %r"
                             % (scale_format,))
        if scale_block < 1:
            _bad(_lib.MOES_ERR_INVALID_SIZE,
                 "scale_block = %d must be at least 1" % scale_block, fn)
        s = -(-h // scale_block)
        cols = s if sfmt == _lib.SCALES_FP32 else -(-s // 4)
        scode = _lib.DTYPE_FP32 if sfmt == _lib.SCALES_FP32 \
            else _lib.DTYPE_INT32
        if scales_mn_major:
            if masked:
                raise _arg_error("scales_mn_major: the masked layout's scales "
                                 "are row-major only")
            out_scales = A.empty(space, (cols, rows), scode, "out_scales")
            out_scales = out_scales.T if A.is_numpy(out_scales) \
                else out_scales.t()
            srs, scs = 1, max(rows, 1)
        else:
            out_scales = A.empty(space, lead + (cols,), scode,
                                 "out_scales")
            srs, scs = cols, 1
    elif scales_mn_major:
        raise _arg_error("scales_mn_major without x_scales")
    out_index, counts, start, end, m_indices, masked_m, sources = \
        _index_outputs(space, icode, n, k, e, rows, lead,
                       lay == _lib.LAYOUT_CONTIGUOUS, masked, row_source)
    n_dropped = A.empty(space, (), _lib.DTYPE_INT64, "n_dropped") \
        if masked else None
    flags = ((_lib.SCATTER_ZERO_PADDING if zero_padding else 0)
             | (_lib.SCATTER_LABEL_PADDING if label_padding else 0)
             | (_lib.SCATTER_UNPADDED_END if unpadded_end else 0))
    p = A.ptr
    scatter_into(ctx, space, x_ptr, n, h, x_rs, xcode, topk_ids, e,
                 x_scales, lay, alignment, expert_map, capacity, flags,
                 scale_block, p(out) if out is not None else None, h,
                 p(out_scales) if sfmt else None,
                 sfmt, srs, scs, icode, p(out_index), k, p(counts), p(start),
                 p(end), p(m_indices) if m_indices is not None else None,
                 p(masked_m) if masked else None,
                 p(n_dropped) if masked else None,
                 p(sources) if sources is not None else None,
                 row_source_pad if sources is not None else -1)
    return ScatterResult(out, out_scales, out_index, m_indices, counts,
                         start, end, masked_m, n_dropped, sources)


# Set (per thread) while the torch.library operator runs scatter: an
# operator's outputs must not share memory, so there each index output
# gets its own allocation.
_separate_outputs = threading.local()


def _index_outputs(space, icode, n, k, e, rows, lead, contiguous, masked,
                   row_source):
    """out_index [N, K], counts, expert_start, expert_end [E], m_indices
    [rows] (contiguous), masked_m [E] (masked), row_source (lead): views of
    one allocation of icode elements, as one allocation costs what the
    rest of a small call's Python work does (None where not made)."""
    made = (True, True, True, True, contiguous, masked, bool(row_source))
    sizes = (n * k, e, e, e, rows, e, rows)
    names = ("out_index", "counts", "expert_start", "expert_end",
             "m_indices", "masked_m", "row_source")
    if getattr(_separate_outputs, "on", False):
        views = [A.empty(space, (size,), icode, name) if want else None
                 for want, size, name in zip(made, sizes, names)]
    else:
        flat = A.empty(space, (sum(s for w, s in zip(made, sizes) if w),),
                       icode, "the index outputs (%s)"
                       % ", ".join(nm for w, nm in zip(made, names) if w))
        views, at = [], 0
        for want, size in zip(made, sizes):
            views.append(flat[at:at + size] if want else None)
            at += size if want else 0
    views[0] = views[0].reshape(n, k)
    if row_source:
        views[6] = views[6].reshape(lead)
    return tuple(views)


_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_SymInt = getattr(torch, "SymInt", None) if torch is not None else None


def _symbolic(v):
    """A size torch.compile traces symbolically (int() would pin it)."""
    return _SymInt is not None and isinstance(v, _SymInt)


def _check_index_only(x, x_scales, row_source, row_source_pad, unpadded_end,
                      fn):
    """What scatter's 0.3 arguments need before anything is allocated (on
    either path, eager or compiled); returns row_source_pad as an int."""
    if row_source:
        _lib.require("row_source", (0, 3))
    if x is None:
        _lib.require("an index-only scatter (x=None)", (0, 3))
        if x_scales is not None:
            raise _arg_error("x_scales is given but x is None: an index-only "
                             "scatter copies no rows and no scales")
    if unpadded_end:
        _lib.require("unpadded_end", (0, 3))
    pad = row_source_pad
    if not isinstance(pad, int) and not _symbolic(pad):
        try:
            pad = operator.index(pad)  # a NumPy or torch integer
        except TypeError:
            raise _arg_error("row_source_pad = %r is not an integer"
                             % (pad,)) from None
    # ctypes would wrap a value past int64 silently; the library checks
    # the index dtype's range.
    if row_source and isinstance(pad, int) and \
            not _INT64_MIN <= pad <= _INT64_MAX:
        _bad(_lib.MOES_ERR_OVERFLOW,
             "row_source_pad = %d does not fit int64" % pad, fn)
    return pad


def scatter_into(ctx, space, x_ptr, n, h, x_rs, xcode, topk_ids, e,
                 x_scales, layout, alignment, expert_map, capacity, flags,
                 scale_block, out, out_rs, out_scales, sfmt, srs, scs, icode,
                 out_index, out_index_rs, counts, start, end, m_indices,
                 masked_m, n_dropped, row_source=None, row_source_pad=-1):
    """The scatter into buffers that exist (the caller's, or scatter's),
    given as pointers (0 or None for none) whose extents the caller has
    checked; x_scales, topk_ids and expert_map are checked here. The
    arrays behind the pointers must live until this returns. x_ptr and
    out None (with no scales) make it index-only."""
    fn = "moes_scatter"
    xs = None
    xs_ptr = None
    xs_rs = 0
    if x_scales is not None:
        xs, xs_ptr, xs_n, xs_s, xs_rs, _ = A.matrix_in(
            x_scales, "x_scales", (_lib.DTYPE_FP32,), space)
        s = -(-h // scale_block)
        if xs_n != n or xs_s != s:
            raise _arg_error("x_scales must be [N, S] with N = %d and S = "
                             "ceil(H / scale_block) = %d, got shape %s"
                             % (n, s, A.shape(xs)))
    with ctx.lock:
        keep, n_ids, k = _routing(ctx, topk_ids, e, expert_map, space, fn)
        if n_ids != n:
            # The library reads a row of x per row of ids.
            raise _arg_error("topk_ids has %d rows, x %d" % (n_ids, n))
        a = ctx.scatter_args
        a.layout = layout
        a.alignment = alignment
        a.capacity = capacity
        a.flags = flags
        a.x = x_ptr
        a.x_dtype = xcode
        a.hidden = h
        a.x_stride = x_rs
        a.x_scales = xs_ptr
        a.scale_block = scale_block
        a.x_scales_stride = xs_rs
        a.out = out
        a.out_stride = out_rs
        a.out_scales = out_scales
        a.out_scales_format = sfmt
        a.out_scales_row_stride = srs
        a.out_scales_col_stride = scs
        a.index_dtype = icode
        a.out_index = out_index
        a.out_index_stride = out_index_rs
        a.counts = counts
        a.expert_start = start
        a.expert_end = end
        a.m_indices = m_indices
        a.masked_m = masked_m
        a.n_dropped = n_dropped
        # Set on every call: the struct is the context's, shared with the
        # other callers (compat's fast path clears row_source too).
        a.row_source = row_source
        a.row_source_pad = row_source_pad
        ws = _enter(ctx, n_ids, k, e, workspace=True)
        st = LIB.moes_scatter(ctx.handle, ctx.routing_ref, ctx.scatter_ref)
        if st != _lib.MOES_OK:
            ctx.fail(st, fn)
    del keep, xs, ws


def scatter_capacity(n_tokens, top_k, num_experts, *, layout="contiguous",
                     alignment=128):
    """The capacity that is never too small: for contiguous and grouped,
    roundup(N*K + min(E, N*K)*(A-1), A) rows; for masked, N*K rows per
    expert (0 when N is 0). Computed from the sizes alone."""
    lay = LAYOUTS.get(layout)
    if lay is None:
        raise _arg_error("layout must be one of %s, got %r"
                         % (", ".join(LAYOUTS), layout))
    ctx = _lib.context(_lib.BACKEND_CPU, 0)
    with ctx.lock:
        return _capacity(ctx.handle, lay, _int64(n_tokens, "n_tokens"),
                         _int64(top_k, "top_k"),
                         _int64(num_experts, "num_experts"),
                         _int64(alignment, "alignment"))


# ---------------------------------------------------------------- align


def align_block_size(topk_ids, block_size, num_experts, expert_map=None,
                     pad_sorted_ids=False):
    """vLLM's ``moe_align_block_size``: the choices sorted by expert in blocks
    of ``block_size`` rows, for fused-MoE GEMMs that read the tokens in
    place. Returns ``(sorted_token_ids, expert_ids,
    num_tokens_post_padded)``, all int32 on topk_ids' device, with vLLM's
    shapes and padding:

    sorted_token_ids  [max_num_tokens_padded]: t*K + k of the choice on
                      each row, ``numel`` (= N*K) on rows that hold none.
                      max_num_tokens_padded = numel + num_experts *
                      (block_size - 1), rounded up to block_size when
                      ``pad_sorted_ids``, and min(numel * block_size, that)
                      when numel < num_experts
    expert_ids        [ceil(max_num_tokens_padded / block_size)]: the expert
                      of each block of block_size rows, -1 for the blocks
                      past the last one used
    num_tokens_post_padded  [1]: the rows used, the sum over experts of
                      their counts rounded up to block_size

    topk_ids is [N, K] (or [numel]) int32 or int64; ids of -1 are skipped.
    Nothing waits for the device: the sizes come from the shapes, so a
    CUDA graph can capture it.

    Where this differs from vLLM:
      * the choices of one expert are always in ascending t*K + k order
        (deterministic; the order of vLLM's CUDA kernel is not fixed);
      * with ``expert_map`` (int32, num_experts entries: global id -> local
        id or -1; ``num_experts`` is the global count) it always behaves as
        vLLM's ``ignore_invalid_experts=True``: the choices the map sends
        to -1 get no rows and no blocks, and expert_ids hold local ids (the
        map's values);
      * ids outside [-1, num_experts) raise ``moescatter.Error`` (vLLM's
        newer kernels skip them; on CUDA the error comes from
        ``synchronize()``, with the outputs left unwritten).

    It is the index-only contiguous ``scatter`` with alignment =
    block_size and capacity = max_num_tokens_padded: sorted_token_ids is
    its row_source (padded with numel), expert_ids every block_size-th
    entry of its m_indices (padding rows labelled with their expert), and
    num_tokens_post_padded its last expert_end. Needs libmoescatter 0.3 or
    later.
    """
    fn = "align_block_size"
    _lib.require("align_block_size", (0, 3))
    if not (A.is_torch(topk_ids) or A.is_numpy(topk_ids)):
        A.space_of(topk_ids, "topk_ids")  # the TypeError that names it
    block_size = _int64(block_size, "block_size")
    num_experts = _int64(num_experts, "num_experts")
    if block_size < 1:
        _bad(_lib.MOES_ERR_INVALID_ALIGNMENT,
             "block_size = %d must be at least 1" % block_size, fn)
    if num_experts < 1:
        _bad(_lib.MOES_ERR_INVALID_SIZE,
             "num_experts = %d must be at least 1" % num_experts, fn)
    if topk_ids.ndim == 1:
        # t*K + k of a [numel, 1] view is the flat index, as with [N, K].
        topk_ids = topk_ids.reshape(-1, 1)
    elif topk_ids.ndim != 2:
        raise _arg_error("topk_ids must be [N, K] or [numel], got shape %s"
                         % (A.shape(topk_ids),))
    if expert_map is not None and not (A.is_torch(expert_map) or
                                       A.is_numpy(expert_map)):
        A.space_of(expert_map, "expert_map")
    if expert_map is not None and (
            len(expert_map.shape) != 1 or
            expert_map.shape[0] != num_experts):
        raise _arg_error("expert_map must have num_experts = %d entries "
                         "(one per global expert), got shape %s"
                         % (num_experts, A.shape(expert_map)))
    numel = topk_ids.shape[0] * topk_ids.shape[1]
    padded = numel + num_experts * (block_size - 1)
    if pad_sorted_ids:
        padded = (padded + block_size - 1) // block_size * block_size
    if numel < num_experts:
        padded = min(numel * block_size, padded)
    # With a map the local ids are its values, all below its length (the
    # library refuses any other): taking that length as the local count
    # needs no look at the map's contents, and the local experts that no
    # entry names get no rows, so they change nothing.
    r = scatter(None, topk_ids, num_experts, layout="contiguous",
                alignment=block_size, expert_map=expert_map,
                capacity=padded, label_padding=True, row_source=True,
                row_source_pad=numel)
    # Every expert's rows start on a block boundary and fill ceil(count /
    # block_size) blocks, the padding rows labelled with its id too: any
    # row of a block, the first one here, names the block's expert.
    expert_ids = A.dense(r.m_indices[::block_size])
    return r.row_source, expert_ids, r.expert_end[-1:]


# ---------------------------------------------------------------- gather


def gather(y, out_index, weights=None, *, out=None, out_dtype=None,
           accumulate=False):
    """Sums each token's expert rows back with the router weights:

        out[t][h] = cvt(acc), acc = 0 (or the old out[t][h] when
        ``accumulate``), then for k = 0 .. K-1 with out_index[t][k] >= 0:
            acc = fp32(acc + fp32(w[t][k] * y[out_index[t][k]][h]))

    in fp32 without fused multiply-add, so every backend gives the same
    bits; cvt rounds to nearest even.

    y          expert outputs [M, H] (or [E, C, H] from a masked scatter),
               bf16, fp16 or fp32
    out_index  [N, K] int32 or int64, from ``scatter``
    weights    optional fp32 [N, K]; None means 1.0
    out        optional [N, H] bf16, fp16 or fp32 to write into (its rows
               must be contiguous runs); else a new array is returned
    out_dtype  the dtype of a new ``out`` (default: y's)
    accumulate add onto ``out``'s values (a shared expert's output, a
               residual) instead of starting from zero; needs ``out``

    Returns ``out``. Raises ``moescatter.Error`` (a ValueError) for bad
    arguments and for out_index entries outside [-1, M) (on CUDA at
    ``synchronize()``, with ``out`` left unchanged).
    """
    fn = "moes_gather"
    _no_grad_wanted("moescatter.gather", y=y, weights=weights, out=out)
    op = _maybe_compiled("gather")
    if op is not None:
        return compile_hook.gather_compiled(op, y, out_index, weights, out,
                                            out_dtype, accumulate)
    space = A.space_of(y, "y")
    if y.ndim == 3:
        y = y.reshape(-1, y.shape[2])
    yin, y_ptr, m, h, y_rs, ycode = A.matrix_in(y, "y", _FLOAT, space)
    oi, oi_ptr, n, k, oi_rs, icode = A.matrix_in(out_index, "out_index",
                                                 _INDEX, space)
    w = None
    w_ptr = None
    w_rs = 0
    if weights is not None:
        w, w_ptr, wn, wk, w_rs, _ = A.matrix_in(weights, "weights",
                                               (_lib.DTYPE_FP32,), space)
        if wn != n or wk != k:
            raise _arg_error("weights must be [N, K] = [%d, %d] like "
                             "out_index, got shape %s" % (n, k, A.shape(w)))
    if out is None:
        if accumulate:
            raise _arg_error("accumulate=True needs out (the values to add "
                             "onto)")
        ocode = A.float_code(out_dtype) if out_dtype is not None else ycode
        out = A.empty(space, (n, h), ocode, "out")
        o_ptr = A.ptr(out)
        o_rs = h
    else:
        o_ptr, on, oh, o_rs, ocode = A.matrix_out(out, "out", _FLOAT, space)
        if out_dtype is not None and A.float_code(out_dtype) != ocode:
            raise _arg_error("out_dtype %s differs from out's dtype %s"
                             % (out_dtype, out.dtype))
        if on != n or oh != h:
            raise _arg_error("out must be [N, H] = [%d, %d], got shape %s"
                             % (n, h, A.shape(out)))
    ctx = _context(space)
    with ctx.lock:
        g = ctx.gather_args
        g.flags = _lib.GATHER_ACCUMULATE if accumulate else 0
        g.n_tokens = n
        g.top_k = k
        g.hidden = h
        g.y = y_ptr
        g.y_dtype = ycode
        g.y_rows = m
        g.y_stride = y_rs
        g.out_index = oi_ptr
        g.index_dtype = icode
        g.out_index_stride = oi_rs
        g.weights = w_ptr
        g.weights_stride = w_rs
        g.out = o_ptr
        g.out_dtype = ocode
        g.out_stride = o_rs
        _enter(ctx)
        st = LIB.moes_gather(ctx.handle, ctx.gather_ref)
        if st != _lib.MOES_OK:
            ctx.fail(st, fn)
    del yin, oi, w
    return out


# ---------------------------------------------------------------- devices


def _device_of(device):
    """(backend, device number) of None, "cpu", "cuda", "cuda:1", an int
    (a CUDA device) or a torch.device."""
    if device is None or device == "cpu":
        return _lib.BACKEND_CPU, 0
    if isinstance(device, int):
        return _lib.BACKEND_CUDA, device
    if torch is not None:
        d = torch.device(device)
        if d.type == "cpu":
            return _lib.BACKEND_CPU, 0
        if d.type == "cuda":
            if d.index is not None:
                return _lib.BACKEND_CUDA, d.index
            return _lib.BACKEND_CUDA, (torch.cuda.current_device()
                                       if torch.cuda.is_available() else 0)
    elif isinstance(device, str) and device.startswith("cuda"):
        return _lib.BACKEND_CUDA, int(device.partition(":")[2] or 0)
    raise _arg_error("device must be 'cpu', 'cuda', 'cuda:N' or an int, got "
                     "%r" % (device,))


def synchronize(device=None):
    """Waits for the work queued on torch's current stream of each CUDA
    device the package has used (or of ``device`` only), then raises the
    first data error the kernels found there since the last synchronize
    (bad ids, map entries, out_index entries, a capacity too small), as a
    ``moescatter.Error``, and clears it. Until then, a call that hit such an
    error wrote nothing, and so did every later call on that device. On the
    CPU errors are raised by the call itself: nothing to wait for."""
    if device is None:
        ctxs = [c for c in _lib.open_contexts()
                if c.backend == _lib.BACKEND_CUDA]
    else:
        backend, dev = _device_of(device)
        if backend != _lib.BACKEND_CUDA:
            return
        ctxs = [_lib.context(backend, dev)]
    for ctx in ctxs:
        with ctx.lock:
            _set_stream(ctx)
            st = LIB.moes_synchronize(ctx.handle)
            if st != _lib.MOES_OK:
                ctx.fail(st, "moes_synchronize")


def backend_info(device=None):
    """What the library runs on for ``device`` (None or "cpu": the CPU
    backend; "cuda", "cuda:N", N or a torch.device: the CUDA backend):
    a dict with backend, reason (why it was chosen or why it cannot run),
    device_name, cpu_threads, multiprocessors, compute_capability,
    memory_bytes, plus version (of the library loaded), library (its path),
    backends_compiled and caller_workspace (whether CUDA calls take their
    workspace from torch's allocator). Raises ``moescatter.Error`` when the
    backend cannot be opened (e.g. CUDA in a build without it)."""
    backend, dev = _device_of(device)
    ctx = _lib.context(backend, dev)
    with ctx.lock:
        info = ctx.info()
    info.update(version=_lib.version(), library=_lib.LIBRARY_PATH,
                backends_compiled=_lib.backends_compiled(),
                caller_workspace=_lib.HAS_WORKSPACE_API)
    return info


def reserve_workspace(n_tokens, top_k, num_experts, device=None):
    """Reserves the library's own scratch memory on ``device`` for calls up
    to these sizes, so that later calls never allocate (a CUDA graph can
    capture them). Needed only where the library lacks the workspace
    hand-over (``backend_info()['caller_workspace']`` is False); warming up
    with one eager call of the largest size before a capture does the same.
    After a reservation a larger call raises MOES_ERR_WORKSPACE."""
    backend, dev = _device_of(device)
    ctx = _lib.context(backend, dev)
    with ctx.lock:
        if backend == _lib.BACKEND_CUDA:
            _set_stream(ctx)
        st = LIB.moes_reserve_workspace(
            ctx.handle, _int64(n_tokens, "n_tokens"), _int64(top_k, "top_k"),
            _int64(num_experts, "num_experts"))
        if st != _lib.MOES_OK:
            ctx.fail(st, "moes_reserve_workspace")

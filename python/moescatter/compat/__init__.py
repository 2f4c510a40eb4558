# SPDX-License-Identifier: MIT
"""Drop-in ``ep_scatter`` and ``ep_gather`` with the argument lists of
LightLLM's Triton kernels (lightllm/common/fused_moe/deepep_scatter_gather.py),
so that an engine swaps one import:

    from moescatter.compat import ep_scatter, ep_gather

vLLM's variant (deep_gemm_utils.py), which adds ``expert_map`` as the fifth
argument of both, is ``moescatter.compat.vllm``; the functions here also
take ``expert_map`` as a keyword, so calls that name every argument (as
vLLM's do) work with either import.

Both write into the caller's buffers and return None, like the originals.
Where the results differ from the Triton kernels, this is what you get:

ep_scatter
  * Row order: rows of one expert are in ascending t*K + k order, every
    time. The Triton kernel orders them by atomics, so its order changes
    from run to run; ours is one of its possible orders.
  * ``num_recv_tokens_per_expert`` is not read (only its length, the number
    of local experts E): the counts are computed from ``recv_topk`` (and the
    map). LightLLM passes DeepEP's counts already rounded up to 128 and
    vLLM the real counts, which its kernel rounds up; both give expert e
    the start sum over e' < e of roundup(count[e'], 128), and so do we:
    the layout is the same as long as those counts are the true ones.
  * ``expert_start_loc[e]`` holds the first row of expert e. The Triton
    kernel leaves first row + count there (its atomic cursors).
  * ``m_indices``: e on every row of expert e's 128-row blocks, padding
    included, as in the Triton kernel; every row after the last block, up
    to ``m_indices.shape[0]``, gets -1, where the Triton kernel leaves what
    was there (vLLM fills it with 0 beforehand, which names expert 0).
  * ``output_index[t][k]`` is -1 for every (t, k) not placed (id -1, or an
    id the map sends to -1); the Triton kernel leaves those entries as they
    were. ``m_indices``, ``output_index`` and ``expert_start_loc`` must
    share one dtype, int32 or int64.
  * Padding rows of ``output_tensor`` and ``output_tensor_scale`` are left
    as they were, as in the Triton kernel.
  * Scales: ``recv_x_scale`` is fp32 [N, S] with S = ceil(H / 128) (the
    Triton kernel copies H // 128; they agree when 128 divides H), copied
    to ``output_tensor_scale`` at its strides (row-major or MN-major). None
    is accepted for no scales.
  * Any H, any number of experts, int32 or int64 ids, strided tensors.
  * Errors: ids outside [-1, E_global), map entries outside [-1, E), and
    more rows than ``m_indices.shape[0]`` (or ``output_tensor``'s rows)
    raise ``moescatter.Error`` with nothing written, on CUDA at
    ``moescatter.synchronize()``; the Triton kernel reads and writes out
    of bounds.

ep_gather
  * A choice is summed when ``input_index[t][k] >= 0``; ``recv_topk_ids``
    and ``expert_map`` are not read. With an
    ``input_index`` from this ``ep_scatter`` that is the same set of
    choices: it wrote -1 for every choice it did not place. An
    ``input_index`` from another kernel, with stale entries where ids are
    -1, must have those entries set to -1 first.
  * Sums in k order in fp32, each product and sum rounded (no fused
    multiply-add): the same bits on CPU and CUDA, and possibly one rounding
    away from the Triton kernel's result, which may fuse.
  * Any H (the Triton kernel asserts a multiple of its block); the weights
    must be fp32; the output may be bf16, fp16 or fp32.
  * An ``input_index`` entry outside [-1, M) raises ``moescatter.Error``
    (on CUDA at ``moescatter.synchronize()``) with the output unchanged.
"""
from .. import _lib
from .. import _ops
from .. import _arrays as A

_arg_error = _lib.argument_error

BLOCK_M = 128  # rows of an expert's block, as in the Triton kernels
BLOCK_SCALE = 128  # elements per fp32 scale
_INDEX = (_lib.DTYPE_INT32, _lib.DTYPE_INT64)
_FP32 = (_lib.DTYPE_FP32,)
_ROW_CODES = {d: c for d, c in A._TORCH_DTYPES.items() if c in _ops._ROWS}
_FLOAT_CODES = {d: c for d, c in A._TORCH_DTYPES.items()
                if c in _ops._FLOAT}
_INDEX_CODES = {d: c for d, c in A._TORCH_DTYPES.items() if c in _INDEX}
_F32 = A.torch.float32 if A.torch is not None else None

# _scatter_fast writes the structs' fields by position, in this order.
assert tuple(f for f, _ in _lib.Routing._fields_) == (
    "struct_size", "n_tokens", "top_k", "ids", "ids_dtype", "ids_stride",
    "expert_map", "n_experts_global", "n_experts")
assert tuple(f for f, _ in _lib.ScatterArgs._fields_) == (
    "struct_size", "layout", "alignment", "capacity", "flags", "x",
    "x_dtype", "hidden", "x_stride", "x_scales", "scale_block",
    "x_scales_stride", "out", "out_stride", "out_scales",
    "out_scales_format", "out_scales_row_stride", "out_scales_col_stride",
    "index_dtype", "out_index", "out_index_stride", "counts",
    "expert_start", "expert_end", "m_indices", "masked_m", "n_dropped",
    "row_source", "row_source_pad")
_I32 = A.torch.int32 if A.torch is not None else None


# The library's context of each device number (-1: the CPU), looked up
# once: contexts live as long as the process (_lib.context).
_CONTEXTS = {}


def _context_of(dev):
    ctx = _CONTEXTS[dev] = _ops._context(dev)
    return ctx


def ep_scatter(recv_x, recv_x_scale, recv_topk, num_recv_tokens_per_expert,
               expert_start_loc, output_tensor, output_tensor_scale,
               m_indices, output_index, *, expert_map=None):
    """LightLLM's ``ep_scatter``: copies each received token's row (and its
    fp32 block scales) once per local expert it chose into
    ``output_tensor``, experts in 128-row blocks (DeepGEMM's contiguous
    layout), and fills ``m_indices``, ``output_index`` and
    ``expert_start_loc``. See the module's documentation for what differs
    from the Triton kernel."""
    if _scatter_fast(recv_x, recv_x_scale, recv_topk,
                     num_recv_tokens_per_expert, expert_start_loc,
                     output_tensor, output_tensor_scale, m_indices,
                     output_index, expert_map):
        return
    _scatter_checked(recv_x, recv_x_scale, recv_topk,
                     num_recv_tokens_per_expert, expert_start_loc,
                     output_tensor, output_tensor_scale, m_indices,
                     output_index, expert_map)


def _scatter_fast(x, xs, ids, counts, start, out, out_s, m_idx, oi, emap):
    """The common case in one straight run of attribute reads: torch
    tensors on one device, the usual dtypes, rows of contiguous elements.
    Returns False, having called nothing, for anything else; the checked
    path then handles it (and words the error). Decode steps call this
    thousands of times a second, and every Python call it saves counts."""
    try:
        # Device numbers: -1 for the CPU. A CUDA x makes every other tensor
        # with its number a tensor of that device (one of another kind with
        # the same number is not a case engines have), and a CPU x a CPU
        # one (a meta tensor's null pointer the library refuses).
        dev = x.get_device()
        if not (x.is_cuda if dev >= 0 else x.is_cpu):
            return False
        if out.get_device() != dev or ids.get_device() != dev or \
                oi.get_device() != dev or m_idx.get_device() != dev or \
                start.get_device() != dev:
            return False
        xcode = _ROW_CODES.get(x.dtype)
        icode = _INDEX_CODES.get(oi.dtype)
        ids_code = _INDEX_CODES.get(ids.dtype)
        if xcode is None or icode is None or ids_code is None or \
                out.dtype != x.dtype or m_idx.dtype != oi.dtype or \
                start.dtype != oi.dtype:
            return False
        n, h = x.shape
        rows, oh = out.shape
        n_ids, k = ids.shape
        oi_n, oi_k = oi.shape
        (capacity,) = m_idx.shape
        (e,) = start.shape
        (e_counts,) = counts.shape
        x_rs, x_cs = x.stride()
        out_rs, out_cs = out.stride()
        ids_rs, ids_cs = ids.stride()
        oi_rs, oi_cs = oi.stride()
        if n < 2 or h < 2 or k < 2 or capacity < 2 or e < 2 or \
                x_cs != 1 or out_cs != 1 or ids_cs != 1 or oi_cs != 1 or \
                x_rs < h or out_rs < h or ids_rs < k or oi_rs < k or \
                m_idx.stride(0) != 1 or start.stride(0) != 1 or \
                e_counts != e or n_ids != n or oi_n != n or oi_k != k or \
                rows < capacity or oh != h:
            return False
        if xs is not None:
            if xs.get_device() != dev or out_s.get_device() != dev or \
                    xs.dtype != _F32 or out_s.dtype != _F32:
                return False
            xs_n, xs_s = xs.shape
            os_rows, os_s = out_s.shape
            xs_rs, xs_cs = xs.stride()
            srs, scs = out_s.stride()
            s = (h + BLOCK_SCALE - 1) // BLOCK_SCALE
            if s < 2 or xs_cs != 1 or xs_rs < xs_s or srs < 1 or \
                    scs < 1 or xs_n != n or xs_s < s or \
                    os_rows < capacity or os_s < s:
                return False
            xs_ptr, os_ptr, sfmt = (xs.data_ptr(), out_s.data_ptr(),
                                    _lib.SCALES_FP32)
        else:
            xs_ptr = os_ptr = None
            xs_rs = srs = scs = 0
            sfmt = _lib.SCALES_NONE
        if emap is not None:
            if emap.get_device() != dev or emap.dtype != _I32:
                return False
            (e_global,) = emap.shape
            if e_global < 2 or emap.stride(0) != 1:
                return False
            map_ptr = emap.data_ptr()
        else:
            map_ptr = None
            e_global = e
    except (AttributeError, TypeError, ValueError):
        return False
    ctx = _CONTEXTS.get(dev) or _context_of(dev)
    with ctx.lock:
        # Every field, in the structs' order (checked at import, above).
        _lib.ROUTING_PACK.pack_into(
            ctx.routing_bytes, 0, ctx.routing.struct_size, n, k,
            ids.data_ptr(), ids_code, ids_rs, map_ptr or 0, e_global, e)
        _lib.SCATTER_PACK.pack_into(
            ctx.scatter_bytes, 0, ctx.scatter_args.struct_size,
            _lib.LAYOUT_CONTIGUOUS, BLOCK_M, capacity,
            _lib.SCATTER_LABEL_PADDING, x.data_ptr(), xcode, h, x_rs,
            xs_ptr or 0, BLOCK_SCALE, xs_rs, out.data_ptr(), out_rs,
            os_ptr or 0, sfmt, srs, scs, icode, oi.data_ptr(), oi_rs,
            0, start.data_ptr(), 0, m_idx.data_ptr(), 0, 0,
            # row_source: none (scatter may have left one in this struct)
            0, -1)
        ws = _ops._enter_routing(ctx, n, k, e)
        st = _lib.LIB.moes_scatter(ctx.handle, ctx.routing_ref,
                                   ctx.scatter_ref)
        if st != _lib.MOES_OK:
            ctx.fail(st, "moes_scatter")
    del ws
    return True


def _scatter_checked(recv_x, recv_x_scale, recv_topk,
                     num_recv_tokens_per_expert, expert_start_loc,
                     output_tensor, output_tensor_scale, m_indices,
                     output_index, expert_map):
    space = A.space_of(recv_x, "recv_x")
    num_experts = num_recv_tokens_per_expert.shape[0]
    x, x_ptr, n, h, x_rs, xcode = A.matrix_in(recv_x, "recv_x", _ops._ROWS,
                                              space)
    out, rows, oh, out_rs, ocode = A.matrix_out(
        output_tensor, "output_tensor", _ops._ROWS, space)
    if ocode != xcode:
        raise TypeError("output_tensor is %s, recv_x %s: the rows are copied "
                        "byte for byte" % (output_tensor.dtype, recv_x.dtype))
    oi, oi_n, oi_k, oi_rs, icode = A.matrix_out(
        output_index, "output_index", _INDEX, space)
    capacity = m_indices.shape[0]
    mi = A.vector_out(m_indices, "m_indices", (icode,), space, capacity)
    st = A.vector_out(expert_start_loc, "expert_start_loc", (icode,), space,
                      num_experts)
    if rows < capacity or oh != h:
        raise _arg_error("output_tensor must be [M, H] with M >= %d "
                         "(m_indices' rows) and H = %d, got shape %s"
                         % (capacity, h, A.shape(output_tensor)))
    if oi_n != n or oi_k != recv_topk.shape[1]:
        raise _arg_error("output_index must have recv_topk's shape %s, got "
                         "%s" % (A.shape(recv_topk), A.shape(output_index)))
    os_ptr = None
    sfmt = _lib.SCALES_NONE
    srs = scs = 0
    if recv_x_scale is not None:
        A.check_space(output_tensor_scale, "output_tensor_scale", space)
        s = -(-h // BLOCK_SCALE)
        sh = output_tensor_scale.shape
        if len(sh) != 2 or sh[0] < capacity or sh[1] < s:
            raise _arg_error("output_tensor_scale must be [M, S] with M >= %d "
                             "and S >= ceil(H / 128) = %d, got shape %s"
                             % (capacity, s, tuple(sh)))
        A.dtype_code(output_tensor_scale, "output_tensor_scale", _FP32)
        if A.is_torch(output_tensor_scale):
            srs, scs = output_tensor_scale.stride()
        else:
            srs, scs = A._np_strides(output_tensor_scale) or (0, 0)
        # The library reads a zero stride as "dense": an expanded view
        # would have its one element's neighbours written.
        if (sh[0] > 1 and srs < 1) or (sh[1] > 1 and scs < 1):
            raise _arg_error("output_tensor_scale has strides %s: its rows "
                             "and columns must be distinct elements"
                             % ((srs, scs),))
        if sh[0] <= 1:
            srs = max(s * scs, 1)
        if sh[1] <= 1:
            scs = 1
        os_ptr = A.ptr(output_tensor_scale)
        sfmt = _lib.SCALES_FP32
    _ops.scatter_into(
        _ops._context(space), space, x_ptr, n, h, x_rs, xcode, recv_topk,
        num_experts, recv_x_scale, _lib.LAYOUT_CONTIGUOUS, BLOCK_M,
        expert_map, capacity, _lib.SCATTER_LABEL_PADDING, BLOCK_SCALE, out,
        out_rs, os_ptr, sfmt, srs, scs, icode, oi, oi_rs, None, st, None, mi,
        None, None)
    del x


def ep_gather(input_tensor, recv_topk_ids, recv_topk_weight, input_index,
              output_tensor, *, expert_map=None):
    """LightLLM's ``ep_gather``: ``output_tensor[t]`` = the sum over k of
    ``recv_topk_weight[t][k] * input_tensor[input_index[t][k]]`` for the
    placed choices, in fp32, converted to ``output_tensor``'s dtype. See
    the module's documentation for what differs from the Triton kernel."""
    if _gather_fast(input_tensor, recv_topk_weight, input_index,
                    output_tensor):
        return
    _ops.gather(input_tensor, input_index, recv_topk_weight,
                out=output_tensor)


def _gather_fast(y, w, oi, out):
    """ep_gather's common case in one run (see _scatter_fast); False, having
    called nothing, for anything else."""
    try:
        dev = y.get_device()  # as in _scatter_fast
        if not (y.is_cuda if dev >= 0 else y.is_cpu):
            return False
        if oi.get_device() != dev or w.get_device() != dev or \
                out.get_device() != dev:
            return False
        ycode = _FLOAT_CODES.get(y.dtype)
        ocode = _FLOAT_CODES.get(out.dtype)
        icode = _INDEX_CODES.get(oi.dtype)
        if ycode is None or ocode is None or icode is None or \
                w.dtype != _F32:
            return False
        m, h = y.shape
        n, k = oi.shape
        wn, wk = w.shape
        on, oh = out.shape
        y_rs, y_cs = y.stride()
        oi_rs, oi_cs = oi.stride()
        w_rs, w_cs = w.stride()
        o_rs, o_cs = out.stride()
        if m < 2 or h < 2 or n < 2 or k < 2 or y_cs != 1 or oi_cs != 1 or \
                w_cs != 1 or o_cs != 1 or y_rs < h or oi_rs < k or \
                w_rs < k or o_rs < h or wn != n or wk != k or on != n or \
                oh != h:
            return False
    except (AttributeError, TypeError, ValueError):
        return False
    ctx = _CONTEXTS.get(dev) or _context_of(dev)
    with ctx.lock:
        g = ctx.gather_args
        g.flags = 0
        g.n_tokens = n
        g.top_k = k
        g.hidden = h
        g.y = y.data_ptr()
        g.y_dtype = ycode
        g.y_rows = m
        g.y_stride = y_rs
        g.out_index = oi.data_ptr()
        g.index_dtype = icode
        g.out_index_stride = oi_rs
        g.weights = w.data_ptr()
        g.weights_stride = w_rs
        g.out = out.data_ptr()
        g.out_dtype = ocode
        g.out_stride = o_rs
        _ops._enter(ctx)
        st = _lib.LIB.moes_gather(ctx.handle, ctx.gather_ref)
        if st != _lib.MOES_OK:
            ctx.fail(st, "moes_gather")
    return True


def count_expert_num_tokens(topk_ids, num_local_experts, expert_map=None):
    """vLLM's ``count_expert_num_tokens``: int32 rows per local expert."""
    return _ops.count(topk_ids, num_local_experts, expert_map=expert_map)


__all__ = ["ep_scatter", "ep_gather", "count_expert_num_tokens"]

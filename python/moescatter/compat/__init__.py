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
    and ``expert_map`` are not read (only the former's shape). With an
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
from .._lib import LIB

import ctypes

BLOCK_M = 128  # rows of an expert's block, as in the Triton kernels
BLOCK_SCALE = 128  # elements per fp32 scale

_INDEX = {}
if A.torch is not None:
    _INDEX = {A.torch.int32: _lib.DTYPE_INT32, A.torch.int64: _lib.DTYPE_INT64}


def _device(t, name, dev):
    if t.get_device() != dev or not isinstance(t, A.torch.Tensor):
        raise ValueError("%s is on %s, the other tensors on %s"
                         % (name, t.device, "cpu" if dev < 0
                            else "cuda:%d" % dev))


def ep_scatter(recv_x, recv_x_scale, recv_topk, num_recv_tokens_per_expert,
               expert_start_loc, output_tensor, output_tensor_scale,
               m_indices, output_index, *, expert_map=None):
    """LightLLM's ``ep_scatter``: copies each received token's row (and its
    fp32 block scales) once per local expert it chose into
    ``output_tensor``, experts in 128-row blocks (DeepGEMM's contiguous
    layout), and fills ``m_indices``, ``output_index`` and
    ``expert_start_loc``. See the module's documentation for what differs
    from the Triton kernel."""
    dev = recv_x.get_device()
    if not A.is_torch(recv_x):
        raise TypeError("recv_x must be a torch.Tensor")
    space = (A.KIND_TORCH, dev)
    num_experts = num_recv_tokens_per_expert.shape[0]
    icode = _INDEX.get(output_index.dtype)
    if icode is None or m_indices.dtype != output_index.dtype or \
            expert_start_loc.dtype != output_index.dtype:
        raise TypeError("output_index, m_indices and expert_start_loc must "
                        "share one dtype, int32 or int64 (got %s, %s, %s)"
                        % (output_index.dtype, m_indices.dtype,
                           expert_start_loc.dtype))
    for name, t in (("recv_topk", recv_topk),
                    ("expert_start_loc", expert_start_loc),
                    ("output_tensor", output_tensor),
                    ("m_indices", m_indices), ("output_index", output_index)):
        _device(t, name, dev)
    x, x_rs = A.as_input_matrix(recv_x, "recv_x")
    xcode = A.dtype_code(x, "recv_x", _ops._ROWS)
    n, h = x.shape
    capacity = m_indices.shape[0]
    if output_tensor.dtype != recv_x.dtype:
        raise TypeError("output_tensor is %s, recv_x %s: the rows are copied "
                        "byte for byte" % (output_tensor.dtype, recv_x.dtype))
    out_rs = A.output_row_stride(output_tensor, "output_tensor")
    if output_tensor.shape[0] < capacity or output_tensor.shape[1] != h:
        raise ValueError("output_tensor must be [M, H] with M >= %d "
                         "(m_indices' rows) and H = %d, got shape %s"
                         % (capacity, h, tuple(output_tensor.shape)))
    A.check_output_vector(m_indices, "m_indices", capacity)
    A.check_output_vector(expert_start_loc, "expert_start_loc", num_experts)
    oi_rs = A.output_row_stride(output_index, "output_index")
    if tuple(output_index.shape) != tuple(recv_topk.shape):
        raise ValueError("output_index must have recv_topk's shape %s, got "
                         "%s" % (tuple(recv_topk.shape),
                                 tuple(output_index.shape)))
    sfmt = _lib.SCALES_NONE
    srs = scs = 0
    if recv_x_scale is not None:
        _device(output_tensor_scale, "output_tensor_scale", dev)
        s = -(-h // BLOCK_SCALE)
        sh = output_tensor_scale.shape
        if output_tensor_scale.dim() != 2 or sh[0] < capacity or sh[1] < s:
            raise ValueError("output_tensor_scale must be [M, S] with M >= %d "
                             "and S >= ceil(H / 128) = %d, got shape %s"
                             % (capacity, s, tuple(sh)))
        A.dtype_code(output_tensor_scale, "output_tensor_scale",
                     (_lib.DTYPE_FP32,))
        srs, scs = output_tensor_scale.stride()
        if sh[0] <= 1:
            srs = max(s * scs, 1)
        if sh[1] <= 1:
            scs = 1
        sfmt = _lib.SCALES_FP32
    ctx = _ops._context(space)
    _ops.scatter_into(
        ctx, space, x, x_rs, xcode, recv_topk, num_experts, recv_x_scale,
        _lib.LAYOUT_CONTIGUOUS, BLOCK_M, expert_map, capacity,
        _lib.SCATTER_LABEL_PADDING, BLOCK_SCALE, output_tensor, out_rs,
        output_tensor_scale if recv_x_scale is not None else None, sfmt, srs,
        scs, icode, output_index, oi_rs, None, expert_start_loc, None,
        m_indices, None, None)


def ep_gather(input_tensor, recv_topk_ids, recv_topk_weight, input_index,
              output_tensor, *, expert_map=None):
    """LightLLM's ``ep_gather``: ``output_tensor[t]`` = the sum over k of
    ``recv_topk_weight[t][k] * input_tensor[input_index[t][k]]`` for the
    placed choices, in fp32, converted to ``output_tensor``'s dtype. See
    the module's documentation for what differs from the Triton kernel."""
    if not A.is_torch(input_tensor):
        raise TypeError("input_tensor must be a torch.Tensor")
    dev = input_tensor.get_device()
    for name, t in (("input_index", input_index),
                    ("recv_topk_weight", recv_topk_weight),
                    ("output_tensor", output_tensor)):
        _device(t, name, dev)
    if recv_topk_ids.shape[1] != input_index.shape[1]:
        raise ValueError("recv_topk_ids and input_index differ in top_k")
    _ops.gather(input_tensor, input_index, recv_topk_weight,
                out=output_tensor)


def count_expert_num_tokens(topk_ids, num_local_experts, expert_map=None):
    """vLLM's ``count_expert_num_tokens``: int32 rows per local expert."""
    return _ops.count(topk_ids, num_local_experts, expert_map=expert_map)


__all__ = ["ep_scatter", "ep_gather", "count_expert_num_tokens"]
del ctypes, LIB

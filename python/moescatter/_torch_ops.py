# SPDX-License-Identifier: MIT
"""torch.library registration, where torch >= 2.4: the custom operators
torch.ops.moescatter.count, .scatter and .gather, with fake kernels that
give the outputs' shapes, dtypes and strides without running anything, so
that torch.compile and torch.export trace through moescatter.count,
scatter and gather (which call these operators while compiling, and the
library directly otherwise, so that eager calls pay no dispatcher cost).

The operators are functional: they return fresh tensors. gather with
``out=`` becomes the operator plus a copy into ``out`` while compiling.
Older torch: nothing is registered and the plain functions work.
"""
from typing import Optional, Tuple

from . import _arrays as A
from . import _lib
from . import _ops

_arg_error = _lib.argument_error

torch = A.torch
REGISTERED = False
REGISTRATION_ERROR = None

_LAYOUT_NAMES = {"contiguous": 1, "grouped": 2, "masked": 3}


def _torch_at_least(major, minor):
    try:
        v = torch.__version__.split("+")[0].split(".")
        return (int(v[0]), int(v[1])) >= (major, minor)
    except (ValueError, IndexError):
        return False


if torch is not None and hasattr(torch, "compiler") and \
        hasattr(torch.compiler, "is_compiling"):
    is_compiling = torch.compiler.is_compiling
else:
    def is_compiling():
        return False


def capacity_bound(layout, n, k, e, alignment):
    """scatter_capacity's bound from sizes that may be symbolic."""
    # torch.sym_min only where a size is symbolic: on plain ints it returns
    # an int, which torch.compile refuses as the result of a torch.* call.
    symbolic = not (isinstance(e, int) and isinstance(n * k, int))
    return _ops.capacity_formula(
        layout == "masked", n, k, e, alignment,
        getattr(torch, "sym_min", min) if symbolic else min)


def _scale_cols(h, scale_block, scale_format):
    s = -(-h // scale_block)
    return s if scale_format == "fp32" else -(-s // 4)


def _register():
    from torch import Tensor

    T10 = Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                Tensor, Tensor, Tensor]

    @torch.library.custom_op("moescatter::count", mutates_args=())
    def count_op(topk_ids: Tensor, num_experts: int,
                 expert_map: Optional[Tensor], int64: bool) -> Tensor:
        return _ops.count(topk_ids, num_experts, expert_map=expert_map,
                          dtype=torch.int64 if int64 else torch.int32)

    @count_op.register_fake
    def _(topk_ids, num_experts, expert_map, int64):
        return topk_ids.new_empty(
            (num_experts,), dtype=torch.int64 if int64 else torch.int32)

    # The arguments since 0.3 come last, with defaults, so that calls with
    # the first fourteen keep working. x None is the index-only scatter.
    # Outputs a call does not have are empty int32 tensors.
    @torch.library.custom_op("moescatter::scatter", mutates_args=())
    def scatter_op(x: Optional[Tensor], topk_ids: Tensor, num_experts: int,
                   x_scales: Optional[Tensor], layout: str, alignment: int,
                   expert_map: Optional[Tensor], capacity: int,
                   scale_format: str, scale_block: int, zero_padding: bool,
                   label_padding: bool, int64_index: bool,
                   scales_mn_major: bool, row_source: bool = False,
                   row_source_pad: int = -1,
                   unpadded_end: bool = False) -> T10:
        # An operator's outputs must not share memory.
        _ops._separate_outputs.on = True
        try:
            r = _ops.scatter(x, topk_ids, num_experts, x_scales,
                             layout=layout, alignment=alignment,
                             expert_map=expert_map, capacity=capacity,
                             scale_format=scale_format,
                             scale_block=scale_block,
                             zero_padding=zero_padding,
                             label_padding=label_padding,
                             index_dtype=torch.int64 if int64_index
                             else torch.int32,
                             scales_mn_major=scales_mn_major,
                             row_source=row_source,
                             row_source_pad=row_source_pad,
                             unpadded_end=unpadded_end)
        finally:
            _ops._separate_outputs.on = False
        none = topk_ids.new_empty((0,), dtype=torch.int32)
        return tuple(none.clone() if f is None else f for f in r)

    @scatter_op.register_fake
    def _(x, topk_ids, num_experts, x_scales, layout, alignment, expert_map,
          capacity, scale_format, scale_block, zero_padding, label_padding,
          int64_index, scales_mn_major, row_source=False, row_source_pad=-1,
          unpadded_end=False):
        ids = topk_ids
        n, k = ids.shape
        e = num_experts
        idt = torch.int64 if int64_index else torch.int32
        masked = layout == "masked"
        rows = e * capacity if masked else capacity
        lead = (e, capacity) if masked else (rows,)
        none = ids.new_empty((0,), dtype=torch.int32)
        if x is not None:
            h = x.shape[1]
            out = x.new_empty(lead + (h,))
        else:
            out = none.clone()
        if x_scales is not None and x is not None:
            cols = _scale_cols(h, scale_block, scale_format)
            sdt = torch.float32 if scale_format == "fp32" else torch.int32
            if scales_mn_major:
                out_scales = ids.new_empty((cols, rows), dtype=sdt).t()
            else:
                out_scales = ids.new_empty(lead + (cols,), dtype=sdt)
        else:
            out_scales = none.clone()
        return (out, out_scales,
                ids.new_empty((n, k), dtype=idt),
                ids.new_empty((rows,), dtype=idt) if layout == "contiguous"
                else none.clone(),
                ids.new_empty((e,), dtype=idt), ids.new_empty((e,), dtype=idt),
                ids.new_empty((e,), dtype=idt),
                ids.new_empty((e,), dtype=idt) if masked else none.clone(),
                ids.new_empty((), dtype=torch.int64) if masked
                else none.clone(),
                ids.new_empty(lead, dtype=idt) if row_source
                else none.clone())

    @torch.library.custom_op("moescatter::gather", mutates_args=())
    def gather_op(y: Tensor, out_index: Tensor, weights: Optional[Tensor],
                  out_dtype_code: int, init: Optional[Tensor]) -> Tensor:
        if init is not None:
            out = init.clone(memory_format=torch.contiguous_format)
            return _ops.gather(y, out_index, weights, out=out,
                               accumulate=True)
        return _ops.gather(y, out_index, weights,
                           out_dtype=A._TORCH_FROM_CODE[out_dtype_code])

    @gather_op.register_fake
    def _(y, out_index, weights, out_dtype_code, init):
        return y.new_empty((out_index.shape[0], y.shape[-1]),
                           dtype=A._TORCH_FROM_CODE[out_dtype_code])


def scatter_compiled(op, x, topk_ids, num_experts, x_scales, layout,
                     alignment, expert_map, capacity, scale_format,
                     scale_block, zero_padding, label_padding, icode,
                     scales_mn_major, row_source=False, row_source_pad=-1,
                     unpadded_end=False):
    if capacity is None:
        n = x.shape[0] if x is not None else topk_ids.shape[0]
        capacity = capacity_bound(layout, n, topk_ids.shape[1],
                                  num_experts, alignment)
    r = op(x, topk_ids, num_experts, x_scales, layout, alignment, expert_map,
           capacity, scale_format, scale_block, zero_padding, label_padding,
           icode == _lib.DTYPE_INT64, scales_mn_major, row_source,
           row_source_pad, unpadded_end)
    masked = layout == "masked"
    return _ops.ScatterResult(
        r[0] if x is not None else None,
        r[1] if x_scales is not None else None, r[2],
        r[3] if layout == "contiguous" else None, r[4], r[5], r[6],
        r[7] if masked else None, r[8] if masked else None,
        r[9] if row_source else None)


def gather_compiled(op, y, out_index, weights, out, out_dtype, accumulate):
    if out is None:
        if accumulate:
            raise _arg_error("accumulate=True needs out (the values to add "
                             "onto)")
        code = A.float_code(out_dtype) if out_dtype is not None \
            else A.float_code(y.dtype)
        return op(y, out_index, weights, code, None)
    res = op(y, out_index, weights, A.float_code(out.dtype),
             out if accumulate else None)
    out.copy_(res)
    return out


if torch is not None and _torch_at_least(2, 4) and \
        hasattr(torch.library, "custom_op"):
    try:
        _register()
        REGISTERED = True
    except Exception as e:  # the plain functions still work
        REGISTRATION_ERROR = "%s: %s" % (type(e).__name__, e)

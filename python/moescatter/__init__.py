# SPDX-License-Identifier: MIT
"""moescatter: the token scatter and gather of Mixture-of-Experts layers, on
torch tensors and NumPy arrays, over the libmoescatter C library.

    import moescatter
    r = moescatter.scatter(x, topk_ids, num_experts)   # contiguous layout
    y = experts(r.out, r.m_indices)                    # your grouped GEMM
    out = moescatter.gather(y, r.out_index, topk_weights)

Rows of one expert are in ascending t*K + k order and the gather sums in k
order in fp32 without fused multiply-add: the CPU and CUDA backends give
the same bits. Torch CPU tensors run on the CPU backend (OpenMP threads),
CUDA tensors on the CUDA backend, on the tensor's device and
torch.cuda.current_stream(); NumPy arrays on the CPU.

Errors raise ``moescatter.Error`` with the library's status name and
message; those about arguments and data are ``ValueError`` too. On CUDA,
errors in the data (ids, map, out_index, capacity) are found by the kernels
and raised by ``moescatter.synchronize()``; in the meantime the call that
hit one wrote nothing, and neither did any later call on that device.

``scatter(None, topk_ids, ...)`` is the index-only scatter: no row is
copied, and ``row_source=True`` gives each row's t*K + k for kernels that
read x in place; ``align_block_size`` builds vLLM's moe_align_block_size
outputs on it.

``moescatter.compat`` has drop-in ``ep_scatter``/``ep_gather`` with the
argument lists of LightLLM's and vLLM's Triton kernels.
"""
from ._lib import Error, ArgumentError, BackendError, library_path
from ._ops import (ScatterResult, count, distinct_experts, scatter, gather,
                   scatter_capacity, align_block_size, backend_info,
                   synchronize, reserve_workspace)
from . import _lib, _ops, _torch_ops

if _torch_ops.REGISTERED:
    _ops.compile_hook = _torch_ops

__version__ = _lib.version()

__all__ = ["Error", "ArgumentError", "BackendError", "ScatterResult",
           "count", "distinct_experts", "scatter", "gather",
           "scatter_capacity", "align_block_size", "backend_info",
           "synchronize", "reserve_workspace", "library_path"]

# SPDX-License-Identifier: MIT
"""vLLM's variant of the Triton kernels (model_executor/layers/fused_moe/
deep_gemm_utils.py): ``expert_map`` is the fifth argument of ``ep_scatter``
and ``ep_gather``. Swap one import:

    from moescatter.compat.vllm import ep_scatter, ep_gather

What differs from the Triton kernels is written in ``moescatter.compat``.
With a map, vLLM's ``ep_gather`` skips the choices the map sends to -1;
this one skips the choices whose ``input_index`` is -1, which
``ep_scatter`` wrote for exactly those.
"""
from . import (ep_scatter as _ep_scatter, ep_gather as _ep_gather,
               count_expert_num_tokens)


def ep_scatter(recv_x, recv_x_scale, recv_topk, num_recv_tokens_per_expert,
               expert_map, expert_start_loc, output_tensor,
               output_tensor_scale, m_indices, output_index):
    """vLLM's ``ep_scatter``; see ``moescatter.compat.ep_scatter``."""
    _ep_scatter(recv_x, recv_x_scale, recv_topk, num_recv_tokens_per_expert,
                expert_start_loc, output_tensor, output_tensor_scale,
                m_indices, output_index, expert_map=expert_map)


def ep_gather(input_tensor, recv_topk_ids, recv_topk_weight, input_index,
              expert_map, output_tensor):
    """vLLM's ``ep_gather``; see ``moescatter.compat.ep_gather``."""
    _ep_gather(input_tensor, recv_topk_ids, recv_topk_weight, input_index,
               output_tensor, expert_map=expert_map)


__all__ = ["ep_scatter", "ep_gather", "count_expert_num_tokens"]

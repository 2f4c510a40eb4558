/* SPDX-License-Identifier: MIT */
/*
 * grid_barrier.cuh - the grid-wide barrier of the cooperative kernels
 * (scatter_grid.cu, sort_grid.cu), whose blocks are all resident at once.
 */
#ifndef MOES_GRID_BARRIER_CUH
#define MOES_GRID_BARRIER_CUH

#include "kernel_common.cuh"

/* Every block of the grid waits here until all have arrived, their
 * writes before it visible to all after it (the grid is resident at
 * once: a cooperative launch). One atomic add a block to a word of the
 * device state: block 0 adds 2^31 - (G - 1), the others 1, so that the
 * adds of the G blocks come to 2^31 and the last one flips the word's top
 * bit, which every block waits to see change; the low bits come back to
 * what they were, for the next barrier. The last block's own add opens
 * the barrier. A count set back to 0 and a generation bumped after the
 * last add, each a round trip of its own, had the barrier open 1.5 us
 * after the last block arrived at EP8 prefill on an H200, against 1.0 us
 * (bench/NOTES.md, v24).
 *
 * `nth` counts the launch's barriers from 0, alike in every block: the
 * even ones take one word, the odd ones the other. On one word, block
 * 0's add at the next barrier could come before a slow block had seen
 * this one open, and flip the bit back under it; the barrier after next
 * cannot start before that block has arrived at the next. */
__device__ __forceinline__ void grid_barrier(gpu_device_state *state, int nth)
{
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned *word = &state->grid_arrived[nth & 1];
        const unsigned add =
            blockIdx.x == 0 ? 0x80000000u - (gridDim.x - 1u) : 1u;
        __threadfence();
        const unsigned before = atomicAdd(word, add);
        volatile unsigned *arrived = word;
        while (((before ^ *arrived) & 0x80000000u) == 0)
            __nanosleep(32);
        __threadfence();
    }
    __syncthreads();
}

#endif

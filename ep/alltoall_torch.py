# SPDX-License-Identifier: MIT
"""The yardstick of the multi-GPU ep timings: torch.distributed's
all_to_all_single over NCCL moving the same bytes as a dispatch or a
combine, timed the same way (median of CUDA-event-timed calls).

    torchrun --nproc-per-node N ep/alltoall_torch.py BYTES_PER_RANK [CALLS]

BYTES_PER_RANK is what one rank sends in total (time_nccl prints the
bytes each step sent); it is split evenly over the ranks, this rank's own
share included, as the ep layer's exchanges include the slots a rank keeps.
"""
import os
import sys

import torch
import torch.distributed as dist


def main():
    total = int(sys.argv[1])
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    dist.init_process_group("nccl")
    rank, size = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    per_peer = max(total // size, 1)
    send = torch.empty(per_peer * size, dtype=torch.uint8, device="cuda")
    recv = torch.empty_like(send)
    for _ in range(5):
        dist.all_to_all_single(recv, send)
    torch.cuda.synchronize()
    times = []
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    for _ in range(calls):
        dist.barrier()
        start.record()
        dist.all_to_all_single(recv, send)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    times.sort()
    print("alltoall_torch: rank %d of %d, %d bytes sent (%d to each rank): "
          "%.2f us median of %d, NCCL %s"
          % (rank, size, per_peer * size, per_peer, times[len(times) // 2],
             calls, ".".join(str(v) for v in torch.cuda.nccl.version())))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

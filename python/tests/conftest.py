# SPDX-License-Identifier: MIT
"""Fixtures of the package's tests: the devices to run on, and random
routing cases with -1 ids, duplicate experts and expert maps."""
import os
import sys

import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(__file__))

DEVICES = ["cpu"]
if torch.cuda.is_available():
    DEVICES.append("cuda")

# Every dtype the library moves rows of, as this torch names them.
ROW_DTYPES = [getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2")
              if hasattr(torch, n)] + [torch.bfloat16, torch.float16,
                                       torch.float32]
FLOAT_DTYPES = [torch.bfloat16, torch.float16, torch.float32]
INDEX_DTYPES = [torch.int32, torch.int64]


def cuda_backend_usable():
    """(True, "") when torch sees a CUDA device and the library's CUDA
    backend opens on it, else (False, why): the reason of CUDA-only
    tests' skips."""
    import moescatter
    if not torch.cuda.is_available():
        return False, "no CUDA device visible to torch"
    try:
        moescatter.backend_info("cuda")
    except moescatter.Error as e:
        return False, "the library's CUDA backend cannot run: %s" % e
    return True, ""


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def finish(device):
    """Where errors of the data surface: the call on the CPU, synchronize()
    on CUDA."""
    import moescatter
    if device != "cpu":
        moescatter.synchronize()


def make_ids(n, k, e_global, gen, dtype=torch.int32, p_none=0.15,
             device="cpu"):
    """[N][K] ids in [-1, e_global), with some -1 and, in about one row in
    four, a duplicate expert."""
    ids = torch.randint(0, e_global, (n, k), generator=gen)
    none = torch.rand(n, k, generator=gen) < p_none
    ids[none] = -1
    if k > 1 and n > 0:
        dup = torch.rand(n, generator=gen) < 0.25
        ids[dup, 1] = ids[dup, 0]
    return ids.to(dtype).to(device)


def make_map(e_global, e_local, gen, device="cpu"):
    """An int32 expert map: e_local of the global experts are here, the
    rest -1."""
    perm = torch.randperm(e_global, generator=gen)
    emap = torch.full((e_global,), -1, dtype=torch.int32)
    emap[perm[:e_local]] = torch.arange(e_local, dtype=torch.int32)
    return emap.to(device)


def make_rows(n, h, dtype, gen, device="cpu"):
    if torch.empty(0, dtype=dtype).element_size() == 1:  # fp8: any bits
        bits = torch.randint(0, 256, (n, h), generator=gen, dtype=torch.int32)
        return bits.to(torch.uint8).view(dtype).to(device)
    return torch.randn(n, h, generator=gen).to(dtype).to(device)


def make_scales(n, s, gen, device="cpu", pow2=False):
    # Powers of two times a mantissa: every exponent byte differs. UE8M0
    # packs only exact powers of two (anything else is refused): pow2 drops
    # the mantissa.
    e = torch.randint(-20, 20, (n, s), generator=gen).float()
    m = torch.ones(n, s) if pow2 else 1.0 + torch.rand(n, s, generator=gen)
    return (m * torch.pow(2.0, e)).to(device)

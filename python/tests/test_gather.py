# SPDX-License-Identifier: MIT
"""moescatter.gather against the reference, bit for bit: every y, out and
index dtype, with and without weights, accumulating or not, strided."""
import pytest
import torch

import moescatter
import reference as ref
from conftest import FLOAT_DTYPES, INDEX_DTYPES, finish


def make(seed, n, k, m, h, y_dtype, index_dtype, device, p_none=0.2):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randn(m, h, generator=gen).to(y_dtype)
    oi = torch.randint(0, m, (n, k), generator=gen)
    oi[torch.rand(n, k, generator=gen) < p_none] = -1
    w = torch.rand(n, k, generator=gen) * 2 - 0.5
    return (y.to(device), oi.to(index_dtype).to(device), w.to(device), gen)


@pytest.mark.parametrize("y_dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("out_dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES, ids=str)
@pytest.mark.parametrize("weighted", [True, False], ids=["w", "now"])
@pytest.mark.parametrize("accumulate", [False, True], ids=["new", "acc"])
def test_gather(device, y_dtype, out_dtype, index_dtype, weighted,
                accumulate):
    y, oi, w, gen = make(21, 15, 4, 33, 70, y_dtype, index_dtype, device)
    w = w if weighted else None
    init = torch.randn(15, 70, generator=gen).to(out_dtype).to(device)
    if accumulate:
        out = init.clone()
        got = moescatter.gather(y, oi, w, out=out, accumulate=True)
        assert got is out
    else:
        got = moescatter.gather(y, oi, w, out_dtype=out_dtype)
    finish(device)
    want = ref.gather(y.cpu(), oi.cpu(), None if w is None else w.cpu(),
                      out_dtype, init.cpu() if accumulate else None)
    assert got.dtype == out_dtype and got.device == y.device
    assert ref.same_bits(got.cpu(), want)


def test_default_out_dtype_is_y(device):
    y, oi, w, _ = make(1, 3, 2, 5, 8, torch.bfloat16, torch.int32, device)
    assert moescatter.gather(y, oi, w).dtype == torch.bfloat16


def test_strided(device):
    y, oi, w, gen = make(5, 9, 3, 20, 24, torch.float32, torch.int64, device)
    y_big = torch.randn(20, 50, generator=gen).to(device)
    y_big[:, 3:27] = y
    ys = y_big[:, 3:27]                           # row stride 50
    oi_wide = torch.stack([oi, oi], 2).reshape(9, 6)
    ois = oi_wide[:, ::2]                         # column stride 2
    wt = w.t().contiguous().t()                   # column-major weights
    out_big = torch.zeros(9, 40, device=device)
    out = out_big[:, 8:32]                        # output row stride 40
    moescatter.gather(ys, ois, wt, out=out)
    finish(device)
    want = ref.gather(y.cpu(), oi.cpu(), w.cpu(), torch.float32)
    assert ref.same_bits(out.cpu().contiguous(), want)
    assert not out_big[:, :8].any() and not out_big[:, 32:].any()


def test_masked_shape_y(device):
    # y from a masked scatter is [E, C, H]: rows are e*C + c.
    y, oi, w, _ = make(9, 6, 2, 12, 16, torch.float16, torch.int32, device)
    got = moescatter.gather(y.reshape(3, 4, 16), oi, w)
    finish(device)
    assert ref.same_bits(got.cpu(), ref.gather(y.cpu(), oi.cpu(), w.cpu()))


def test_scatter_then_gather_is_the_weighted_sum(device):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(10, 32, generator=gen).to(device)
    ids = torch.randint(0, 4, (10, 3), generator=gen).int().to(device)
    w = torch.rand(10, 3, generator=gen).to(device)
    r = moescatter.scatter(x, ids, 4, alignment=16)
    out = moescatter.gather(r.out, r.out_index, w, out_dtype=torch.float32)
    finish(device)
    expect = torch.zeros(10, 32)
    for kk in range(3):
        expect = expect + x.cpu() * w.cpu()[:, kk:kk + 1]
    assert torch.allclose(out.cpu(), expect, rtol=1e-5, atol=1e-6)

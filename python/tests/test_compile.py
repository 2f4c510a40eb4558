# SPDX-License-Identifier: MIT
"""torch.library registration (torch >= 2.4): the operators pass
torch.library.opcheck (schema, fake kernel against the real one) and
torch.compile traces scatter and gather with fullgraph=True."""
import pytest
import torch

import moescatter
from moescatter import _torch_ops
import reference as ref
from conftest import finish

pytestmark = pytest.mark.skipif(
    not _torch_ops.REGISTERED,
    reason="torch %s: the operators are registered from torch 2.4 on%s"
    % (torch.__version__, " (%s)" % _torch_ops.REGISTRATION_ERROR
       if _torch_ops.REGISTRATION_ERROR else ""))


def inputs(device):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(9, 256, generator=gen).to(torch.bfloat16).to(device)
    ids = torch.randint(-1, 6, (9, 2), generator=gen).int().to(device)
    # UE8M0 packs exact powers of two only.
    xs = torch.pow(2.0, torch.randint(-8, 8, (9, 2), generator=gen).float()
                   ).to(device)
    w = torch.rand(9, 2, generator=gen).to(device)
    return x, ids, xs, w


@pytest.mark.parametrize("layout", ["contiguous", "grouped", "masked"])
@pytest.mark.parametrize("mn_major", [False, True])
def test_opcheck(device, layout, mn_major):
    if mn_major and layout == "masked":
        pytest.skip("masked scales are row-major only")
    x, ids, xs, w = inputs(device)
    ops = torch.ops.moescatter
    # 6 experts, alignment 128: up to 6 * 128 rows (the scatter's bound).
    cap = 4 if layout == "masked" else 6 * 128
    torch.library.opcheck(ops.count, (ids, 6, None, False))
    torch.library.opcheck(ops.scatter, (x, ids, 6, xs, layout, 128, None,
                                        cap, "ue8m0", 128, True, False,
                                        False, mn_major))
    y = torch.randn(6 * 4 if layout == "masked" else 256, 256).to(device)
    oi = torch.randint(-1, y.shape[0], (9, 2)).int().to(device)
    torch.library.opcheck(ops.gather, (y, oi, w, 5, None))
    torch.library.opcheck(ops.gather, (y, oi, w, 3, torch.zeros(
        9, 256, dtype=torch.bfloat16, device=device)))


@pytest.mark.parametrize("layout", ["contiguous", "grouped", "masked"])
@pytest.mark.parametrize("index_only", [False, True],
                         ids=["rows", "indexonly"])
def test_opcheck_row_source(device, layout, index_only):
    """The arguments of 0.3, after the first fourteen: row_source, its pad
    and unpadded_end; x None for the index-only scatter."""
    x, ids, xs, w = inputs(device)
    cap = 4 if layout == "masked" else 6 * 128
    # opcheck compares outputs: padding rows are zeroed where there are
    # rows, and there is nothing else to leave unwritten.
    torch.library.opcheck(torch.ops.moescatter.scatter, (
        None if index_only else x, ids, 6, None if index_only else xs,
        layout, 128, None, cap, "fp32", 128, not index_only, True, False,
        False, True, ids.numel(), True))


def test_compile_fullgraph(device):
    x, ids, xs, w = inputs(device)

    def layer(x, ids, xs, w):
        r = moescatter.scatter(x, ids, 6, xs, alignment=16,
                               scale_format="ue8m0", zero_padding=True)
        y = r.out.float() * 2
        out = moescatter.gather(y, r.out_index, w, out_dtype=torch.float32)
        return out, r.m_indices, r.out_scales, moescatter.count(ids, 6)

    eager = layer(x, ids, xs, w)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)(
        x, ids, xs, w)
    finish(device)
    for a, b in zip(eager, compiled):
        assert ref.same_bits(a.cpu(), b.cpu())


def test_compile_gather_into_out(device):
    x, ids, xs, w = inputs(device)
    y = torch.randn(40, 256).to(device)
    oi = torch.randint(-1, 40, (9, 2)).int().to(device)

    def f(y, oi, w, out):
        return moescatter.gather(y, oi, w, out=out, accumulate=True)

    base = torch.randn(9, 256).to(device)
    want = f(y, oi, w, base.clone())
    got = torch.compile(f, backend="aot_eager", fullgraph=True)(
        y, oi, w, base.clone())
    assert ref.same_bits(want.cpu(), got.cpu())


def test_compile_index_only_and_align(device):
    x, ids, xs, w = inputs(device)
    emap = torch.tensor([3, -1, 0, 1, -1, 2], dtype=torch.int32,
                        device=device)

    def route(ids, emap):
        r = moescatter.scatter(None, ids, 6, layout="grouped", alignment=16,
                               row_source=True, row_source_pad=-7,
                               unpadded_end=True)
        rows = moescatter.scatter(x, ids, 6, layout="masked", capacity=3,
                                  zero_padding=True, row_source=True)
        a = moescatter.align_block_size(ids, 16, 6, emap,
                                        pad_sorted_ids=True)
        return (r.out_index, r.row_source, r.expert_start, r.expert_end,
                rows.out, rows.row_source, rows.masked_m) + a

    eager = route(ids, emap)
    compiled = torch.compile(route, backend="aot_eager", fullgraph=True)(
        ids, emap)
    finish(device)
    assert len(eager) == len(compiled) == 10
    for a, b in zip(eager, compiled):
        assert ref.same_bits(a.cpu(), b.cpu())

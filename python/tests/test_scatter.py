# SPDX-License-Identifier: MIT
"""moescatter.scatter and count against the reference, for every layout,
row dtype, index dtype, scale format and flag, with and without a map,
with strided inputs."""
import zlib

import pytest
import torch

import moescatter
import reference as ref
from conftest import (ROW_DTYPES, INDEX_DTYPES, finish, make_ids, make_map,
                      make_rows, make_scales)

LAYOUTS = ["contiguous", "grouped", "masked"]


def check(res, want, x, *, layout, index_dtype=torch.int32, zero_padding=False,
          scales=False, scale_format="fp32", mn_major=False):
    n, h = x.shape
    cpu = lambda t: t.cpu()  # noqa: E731
    assert res.out_index.dtype == index_dtype
    assert res.out_index.tolist() == want.out_index
    assert res.counts.dtype == index_dtype
    assert res.counts.tolist() == want.counts
    assert res.expert_start.tolist() == want.start
    assert res.expert_end.tolist() == want.end
    if layout == "contiguous":
        assert res.m_indices.dtype == index_dtype
        assert res.m_indices.tolist() == want.m_indices
    else:
        assert res.m_indices is None
    if layout == "masked":
        assert res.masked_m.tolist() == want.masked_m
        assert res.n_dropped.dtype == torch.int64 and res.n_dropped.dim() == 0
        assert int(res.n_dropped) == want.dropped
        assert tuple(res.out.shape) == (len(want.counts), want.capacity, h)
    else:
        assert res.masked_m is None and res.n_dropped is None
        assert tuple(res.out.shape) == (want.capacity, h)
    out = cpu(res.out).reshape(-1, h)
    xc = cpu(x)
    assert out.shape[0] == want.rows
    for row, t in want.placed.items():
        assert ref.same_bits(out[row], xc[t]), "row %d (token %d)" % (row, t)
    padding = [r for r in range(want.rows) if r not in want.placed]
    if zero_padding and padding:
        pad = out[padding]
        assert ref.same_bits(pad, torch.zeros_like(pad))
    if not scales:
        assert res.out_scales is None
        return
    sc = cpu(res.out_scales)
    sc = sc.reshape(-1, sc.shape[-1])
    if mn_major:
        assert res.out_scales.stride(0) == 1
    if scale_format == "fp32":
        assert sc.dtype == torch.float32 and sc.shape[1] == want.n_scales
    else:
        assert sc.dtype == torch.int32
        assert sc.shape[1] == -(-want.n_scales // 4)
    for row, s in want.scales.items():
        assert ref.same_bits(sc[row], s.cpu()), "scales of row %d" % row
    if zero_padding and padding:
        assert not sc[padding].bool().any()


def case(seed, n, k, e, e_global=None, ids_dtype=torch.int32, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    emap = make_map(e_global, e, gen, device) if e_global else None
    ids = make_ids(n, k, e_global or e, gen, ids_dtype, device=device)
    return gen, ids, emap


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ROW_DTYPES, ids=str)
@pytest.mark.parametrize("ids_dtype", INDEX_DTYPES, ids=str)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES, ids=str)
@pytest.mark.parametrize("with_map", [False, True], ids=["nomap", "map"])
def test_layouts_dtypes(device, layout, dtype, ids_dtype, index_dtype,
                        with_map):
    e = 6
    seed = zlib.crc32(("%s%s%s" % (layout, dtype, with_map)).encode())
    gen, ids, emap = case(seed, 23,
                          3, e, 10 if with_map else None, ids_dtype, device)
    x = make_rows(23, 37, dtype, gen, device)
    alignment = 4
    capacity = 5 if layout == "masked" else None
    res = moescatter.scatter(x, ids, e, layout=layout, alignment=alignment,
                             expert_map=emap, capacity=capacity,
                             index_dtype=index_dtype)
    finish(device)
    want = ref.scatter(x.cpu(), ids.cpu(), e, layout=layout,
                       alignment=alignment,
                       expert_map=None if emap is None else emap.cpu(),
                       capacity=capacity)
    check(res, want, x, layout=layout, index_dtype=index_dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("scale_format", ["fp32", "ue8m0"])
@pytest.mark.parametrize("scale_block", [128, 32, 48])
@pytest.mark.parametrize("mn_major", [False, True],
                         ids=["rowmajor", "mnmajor"])
def test_scales(device, layout, scale_format, scale_block, mn_major):
    e, h = 5, 300
    gen, ids, _ = case(7, 19, 4, e, device=device)
    x = make_rows(19, h, torch.bfloat16, gen, device)
    s = -(-h // scale_block)
    xs = make_scales(19, s, gen, device, pow2=scale_format == "ue8m0")
    capacity = 6 if layout == "masked" else None
    kw = dict(layout=layout, alignment=8, capacity=capacity,
              scale_format=scale_format, scale_block=scale_block,
              scales_mn_major=mn_major)
    if mn_major and layout == "masked":
        with pytest.raises(ValueError):
            moescatter.scatter(x, ids, e, xs, **kw)
        return
    res = moescatter.scatter(x, ids, e, xs, **kw)
    finish(device)
    want = ref.scatter(x.cpu(), ids.cpu(), e, xs.cpu(), layout=layout,
                       alignment=8, capacity=capacity,
                       scale_format=scale_format, scale_block=scale_block)
    check(res, want, x, layout=layout, scales=True, scale_format=scale_format,
          mn_major=mn_major)


@pytest.mark.parametrize("bad", [1.5, -2.0, 0.0, float("inf"), float("nan"),
                                 1e-40])
def test_ue8m0_refuses_a_scale_it_cannot_hold(device, bad):
    # A scale that is not a positive normal power of two would lose its
    # mantissa (or have no UE8M0 value): the call is refused, naming the
    # element, and writes nothing.
    e, h = 4, 256
    gen, ids, _ = case(3, 6, 2, e, device=device)
    x = make_rows(6, h, torch.bfloat16, gen, device)
    xs = make_scales(6, 2, gen, device, pow2=True)
    xs[4, 1] = bad
    out = torch.full((64, h), 7, dtype=torch.bfloat16, device=device)
    with pytest.raises(moescatter.Error) as info:
        r = moescatter.scatter(x, ids, e, xs, alignment=8, capacity=64,
                               scale_format="ue8m0")
        finish(device)
        out.copy_(r.out)
    assert info.value.status_name == "MOES_ERR_INVALID_SCALE"
    assert "[4][1]" in str(info.value), str(info.value)
    assert isinstance(info.value, ValueError)
    assert bool((out == 7).all())


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("zero_padding", [False, True], ids=["keep", "zero"])
@pytest.mark.parametrize("label_padding", [False, True],
                         ids=["unlabelled", "labelled"])
def test_flags(device, layout, zero_padding, label_padding):
    e = 4
    gen, ids, _ = case(11, 17, 2, e, device=device)
    x = make_rows(17, 64, torch.float16, gen, device)
    xs = make_scales(17, 1, gen, device)
    capacity = 7 if layout == "masked" else 64
    res = moescatter.scatter(x, ids, e, xs, layout=layout, alignment=8,
                             capacity=capacity, zero_padding=zero_padding,
                             label_padding=label_padding)
    finish(device)
    want = ref.scatter(x.cpu(), ids.cpu(), e, xs.cpu(), layout=layout,
                       alignment=8, capacity=capacity,
                       label_padding=label_padding)
    check(res, want, x, layout=layout, zero_padding=zero_padding, scales=True)


@pytest.mark.parametrize("alignment", [1, 3, 128])
def test_default_capacity_is_the_bound(device, alignment):
    e = 9
    gen, ids, _ = case(3, 31, 5, e, device=device)
    x = make_rows(31, 8, torch.float32, gen, device)
    res = moescatter.scatter(x, ids, e, alignment=alignment)
    finish(device)
    bound = ref.capacity_bound("contiguous", 31, 5, e, alignment)
    assert res.out.shape[0] == bound == res.m_indices.shape[0]
    assert moescatter.scatter_capacity(31, 5, e, alignment=alignment) == bound
    want = ref.scatter(x.cpu(), ids.cpu(), e, alignment=alignment)
    check(res, want, x, layout="contiguous")


def test_masked_drops(device):
    # Every token picks expert 0 twice: C = 3 keeps the first three choices.
    ids = torch.zeros(4, 2, dtype=torch.int32, device=device)
    x = torch.arange(8, dtype=torch.float32, device=device).reshape(4, 2)
    res = moescatter.scatter(x, ids, 2, layout="masked", capacity=3)
    finish(device)
    assert res.out_index.tolist() == [[0, 1], [2, -1], [-1, -1], [-1, -1]]
    assert res.masked_m.tolist() == [3, 0]
    assert int(res.n_dropped) == 5
    assert res.counts.tolist() == [8, 0]


def test_duplicates_and_all_none(device):
    ids = torch.tensor([[1, 1, -1], [-1, -1, -1], [0, 1, 1]],
                       dtype=torch.int64, device=device)
    x = torch.tensor([[1.0], [2.0], [3.0]], device=device)
    res = moescatter.scatter(x, ids, 2, alignment=2)
    finish(device)
    # expert 0: token 2 (rows 0..1); expert 1: t0 k0, t0 k1, t2 k1, t2 k2.
    assert res.out_index.tolist() == [[2, 3, -1], [-1, -1, -1], [0, 4, 5]]
    assert res.m_indices[:6].tolist() == [0, -1, 1, 1, 1, 1]
    assert res.out[[0, 2, 3, 4, 5], 0].tolist() == [3.0, 1.0, 1.0, 3.0, 3.0]


def test_no_tokens(device):
    ids = torch.empty(0, 4, dtype=torch.int32, device=device)
    x = torch.empty(0, 16, dtype=torch.bfloat16, device=device)
    res = moescatter.scatter(x, ids, 3)
    finish(device)
    assert res.out.shape == (0, 16) and res.out_index.shape == (0, 4)
    assert res.counts.tolist() == [0, 0, 0]
    assert moescatter.count(ids, 3).tolist() == [0, 0, 0]


# ---------------------------------------------------------------- strides


def test_strided_inputs(device):
    e, n, k, h = 5, 13, 3, 40
    gen, ids_wide, emap_wide = case(5, n, 2 * k, e, 8, device=device)
    ids = ids_wide[:, ::2]                       # column stride 2
    emap = torch.stack([emap_wide, emap_wide], 1)[:, 0]   # stride 2
    big = make_rows(n, 3 * h, torch.bfloat16, gen, device)
    x = big[:, 5:5 + h]                          # row stride 3h
    xt = make_rows(h, n, torch.bfloat16, gen, device).t()  # transposed
    xs_big = make_scales(n, 4, gen, device)
    xs = xs_big[:, 1:2]                          # row stride 4, S = 1
    for rows in (x, xt):
        res = moescatter.scatter(rows, ids, e, xs, expert_map=emap,
                                 alignment=4)
        finish(device)
        want = ref.scatter(rows.cpu(), ids.cpu(), e, xs.cpu(),
                           expert_map=emap.cpu(), alignment=4)
        check(res, want, rows, layout="contiguous", scales=True)


def test_expanded_rows(device):
    # One row seen N times (row stride 0): every output row is that row.
    row = torch.arange(6, dtype=torch.float32, device=device)
    x = row.expand(4, 6)
    ids = torch.tensor([[0], [1], [0], [1]], dtype=torch.int32, device=device)
    res = moescatter.scatter(x, ids, 2, alignment=1)
    finish(device)
    assert torch.equal(res.out.cpu(), row.cpu().expand(4, 6))


# ---------------------------------------------------------------- count


@pytest.mark.parametrize("ids_dtype", INDEX_DTYPES, ids=str)
@pytest.mark.parametrize("counts_dtype", INDEX_DTYPES, ids=str)
@pytest.mark.parametrize("with_map", [False, True], ids=["nomap", "map"])
def test_count(device, ids_dtype, counts_dtype, with_map):
    e = 7
    gen, ids, emap = case(13, 40, 4, e, 12 if with_map else None, ids_dtype,
                          device)
    counts = moescatter.count(ids, e, expert_map=emap, dtype=counts_dtype)
    finish(device)
    want = [0] * e
    for row in ref.local_ids(ids.cpu(), e,
                             None if emap is None else emap.cpu()):
        for i in row:
            if i >= 0:
                want[i] += 1
    assert counts.dtype == counts_dtype and counts.tolist() == want
    assert counts.device == ids.device


# ---------------------------------------------------------------- distinct


@pytest.mark.parametrize("ids_dtype", INDEX_DTYPES, ids=str)
@pytest.mark.parametrize("out_dtype", INDEX_DTYPES, ids=str)
@pytest.mark.parametrize("with_map", [False, True], ids=["nomap", "map"])
def test_distinct_experts(device, ids_dtype, out_dtype, with_map):
    # Few experts and many choices, so that tokens name experts twice.
    e = 3
    gen, ids, emap = case(17, 40, 6, e, 9 if with_map else None, ids_dtype,
                          device)
    got = moescatter.distinct_experts(ids, e, expert_map=emap,
                                      dtype=out_dtype)
    finish(device)
    assert got.dtype == out_dtype and got.device == ids.device
    assert tuple(got.shape) == tuple(ids.shape)
    for row, want_from in zip(got.tolist(),
                              ref.local_ids(ids.cpu(), e,
                                            None if emap is None
                                            else emap.cpu())):
        want = sorted({i for i in want_from if i >= 0})
        assert row == want + [-1] * (ids.shape[1] - len(want))


def test_distinct_experts_bad_id(device):
    ids = torch.tensor([[0, 1], [2, 5]], dtype=torch.int32, device=device)
    with pytest.raises(moescatter.Error) as err:
        moescatter.distinct_experts(ids, 3)
        finish(device)
    assert "ids[1][1] = 5" in str(err.value)

# SPDX-License-Identifier: MIT
"""Index-only routing: row_source, the scatter without rows (x=None),
unpadded_end, and align_block_size against vLLM's moe_align_block_size
conventions, for every layout, on every device; the CUDA graph capture of
align_block_size; the refusal of all of these by a library older than
0.3."""
import zlib

import pytest
import torch

import moescatter
from moescatter import _lib
import reference as ref
from conftest import (INDEX_DTYPES, cuda_backend_usable, finish, make_ids,
                      make_map, make_rows, make_scales)

np = pytest.importorskip("numpy")

LAYOUTS = ["contiguous", "grouped", "masked"]

needs_0_3 = pytest.mark.skipif(
    not _lib.HAS_INDEX_ONLY,
    reason="the library loaded is %s; index-only routing is 0.3's"
    % moescatter.__version__)


def case(name, n, k, e, e_global=None, ids_dtype=torch.int32,
         device="cpu"):
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    emap = make_map(e_global, e, gen, device) if e_global else None
    ids = make_ids(n, k, e_global or e, gen, ids_dtype, device=device)
    return gen, ids, emap


def flat(t):
    return t.reshape(-1).tolist()


def check_index_outputs(res, want, layout, index_dtype, unpadded_end=False):
    assert res.out_index.dtype == index_dtype
    assert res.out_index.tolist() == want.out_index
    assert res.counts.tolist() == want.counts
    assert res.expert_start.tolist() == want.start
    assert res.expert_end.tolist() == (want.end_unpadded if unpadded_end
                                       else want.end)
    if layout == "contiguous":
        assert res.m_indices.tolist() == want.m_indices
    else:
        assert res.m_indices is None
    if layout == "masked":
        assert res.masked_m.tolist() == want.masked_m
        assert int(res.n_dropped) == want.dropped
    else:
        assert res.masked_m is None and res.n_dropped is None


# ---------------------------------------------------------------- row_source


@needs_0_3
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES, ids=str)
@pytest.mark.parametrize("with_map", [False, True], ids=["nomap", "map"])
@pytest.mark.parametrize("pad", [-1, 0, 777, -123456], ids=str)
def test_row_source(device, layout, index_dtype, with_map, pad):
    e = 5
    gen, ids, emap = case("rs%s%s%s" % (layout, with_map, pad), 21, 3, e,
                          9 if with_map else None, device=device)
    x = make_rows(21, 24, torch.bfloat16, gen, device)
    capacity = 14 if layout == "masked" else None
    res = moescatter.scatter(x, ids, e, layout=layout, alignment=8,
                             expert_map=emap, capacity=capacity,
                             index_dtype=index_dtype, row_source=True,
                             row_source_pad=pad)
    finish(device)
    want = ref.scatter(x.cpu(), ids.cpu(), e, layout=layout, alignment=8,
                       expert_map=None if emap is None else emap.cpu(),
                       capacity=capacity)
    rs = res.row_source
    assert rs.dtype == index_dtype and rs.device == ids.device
    assert tuple(rs.shape) == ((e, want.capacity) if layout == "masked"
                               else (want.capacity,))
    assert flat(rs) == ref.row_source(want, pad)
    # Real rows and padding rows both occur in these cases.
    assert want.sources and len(want.sources) < want.rows
    # The rows themselves are as without row_source.
    out = res.out.cpu().reshape(-1, 24)
    for row, t in want.placed.items():
        assert ref.same_bits(out[row], x[t].cpu())
    check_index_outputs(res, want, layout, index_dtype)


@needs_0_3
@pytest.mark.parametrize("layout", LAYOUTS)
def test_row_source_maps_rows_back_to_tokens(device, layout):
    """row_source // K is the token whose row was copied there."""
    e, k = 6, 4
    gen, ids, _ = case("back" + layout, 30, k, e, device=device)
    x = make_rows(30, 16, torch.float32, gen, device)
    res = moescatter.scatter(x, ids, e, layout=layout, alignment=4,
                             capacity=20 if layout == "masked" else None,
                             row_source=True)
    finish(device)
    rs = res.row_source.reshape(-1).cpu()
    out = res.out.reshape(-1, 16).cpu()
    real = rs >= 0
    assert bool(real.any()) and not bool(real.all())
    assert torch.equal(out[real], x.cpu()[rs[real].long() // k])


@needs_0_3
def test_row_source_default_is_none_and_pad_ignored(device):
    gen, ids, _ = case("none", 8, 2, 3, device=device)
    x = make_rows(8, 4, torch.float32, gen, device)
    res = moescatter.scatter(x, ids, 3, alignment=2)
    assert res.row_source is None and len(res) == 10
    assert res._fields[-1] == "row_source"
    # Without row_source the pad is not used, and so not checked.
    moescatter.scatter(x, ids, 3, alignment=2, row_source_pad=1 << 40)
    finish(device)


@needs_0_3
@pytest.mark.parametrize("pad", [1 << 31, -(1 << 31) - 1, 1 << 40,
                                 (1 << 63) - 1, -(1 << 63)], ids=str)
def test_row_source_pad_beyond_int32(device, pad):
    gen, ids, _ = case("wide%d" % pad, 10, 2, 3, device=device)
    kw = dict(alignment=4, capacity=32, row_source=True, row_source_pad=pad)
    with pytest.raises(moescatter.Error) as info:
        moescatter.scatter(None, ids, 3, **kw)
    assert info.value.status_name == "MOES_ERR_OVERFLOW"
    assert isinstance(info.value, ValueError)
    res = moescatter.scatter(None, ids, 3, index_dtype=torch.int64, **kw)
    finish(device)
    want = ref.scatter(None, ids.cpu(), 3, alignment=4, capacity=32)
    assert flat(res.row_source) == ref.row_source(want, pad)


@needs_0_3
@pytest.mark.parametrize("pad", [1 << 63, -(1 << 63) - 1], ids=str)
def test_row_source_pad_beyond_int64(device, pad):
    gen, ids, _ = case("huge", 4, 2, 3, device=device)
    with pytest.raises(moescatter.Error) as info:
        moescatter.scatter(None, ids, 3, index_dtype=torch.int64,
                           row_source=True, row_source_pad=pad)
    assert info.value.status_name == "MOES_ERR_OVERFLOW"


# ---------------------------------------------------------------- x=None


@needs_0_3
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("ids_dtype", INDEX_DTYPES, ids=str)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES, ids=str)
@pytest.mark.parametrize("with_map", [False, True], ids=["nomap", "map"])
@pytest.mark.parametrize("label_padding", [False, True],
                         ids=["unlabelled", "labelled"])
def test_index_only_equals_the_scatter_with_rows(device, layout, ids_dtype,
                                                 index_dtype, with_map,
                                                 label_padding):
    e = 7
    gen, ids, emap = case("io%s%s%s%s" % (layout, ids_dtype, with_map,
                                          label_padding),
                          33, 4, e, 12 if with_map else None, ids_dtype,
                          device)
    x = make_rows(33, 40, torch.float16, gen, device)
    xs = make_scales(33, 1, gen, device)
    capacity = 6 if layout == "masked" else None
    kw = dict(layout=layout, alignment=4, expert_map=emap, capacity=capacity,
              label_padding=label_padding, index_dtype=index_dtype,
              row_source=True, row_source_pad=-5)
    with_rows = moescatter.scatter(x, ids, e, xs, **kw)
    index_only = moescatter.scatter(None, ids, e, **kw)
    finish(device)
    assert index_only.out is None and index_only.out_scales is None
    for name in ("out_index", "m_indices", "counts", "expert_start",
                 "expert_end", "masked_m", "n_dropped", "row_source"):
        a, b = getattr(with_rows, name), getattr(index_only, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == b.dtype and a.device == b.device, name
            assert torch.equal(a.cpu(), b.cpu()), name
    want = ref.scatter(None, ids.cpu(), e, layout=layout, alignment=4,
                       expert_map=None if emap is None else emap.cpu(),
                       capacity=capacity, label_padding=label_padding)
    check_index_outputs(index_only, want, layout, index_dtype)
    assert flat(index_only.row_source) == ref.row_source(want, -5)


@needs_0_3
def test_index_only_default_capacity_and_no_tokens(device):
    gen, ids, _ = case("cap", 19, 3, 5, device=device)
    res = moescatter.scatter(None, ids, 5, alignment=16, row_source=True)
    finish(device)
    assert res.row_source.shape[0] == \
        ref.capacity_bound("contiguous", 19, 3, 5, 16)
    empty = torch.empty(0, 3, dtype=torch.int32, device=device)
    for layout in LAYOUTS:
        res = moescatter.scatter(None, empty, 5, layout=layout,
                                 capacity=2 if layout == "masked" else None,
                                 row_source=True, zero_padding=False)
        finish(device)
        assert res.out_index.shape == (0, 3)
        assert res.counts.tolist() == [0] * 5
    # No rows at all: zero_padding has nothing to refuse.
    moescatter.scatter(None, empty, 5, zero_padding=True)
    finish(device)


@needs_0_3
def test_index_only_numpy():
    gen, ids_t, emap_t = case("np", 15, 3, 4, 6)
    ids, emap = ids_t.numpy(), emap_t.numpy()
    for layout in LAYOUTS:
        cap = 5 if layout == "masked" else 64
        r = moescatter.scatter(None, ids, 4, layout=layout, alignment=4,
                               expert_map=emap, capacity=cap,
                               row_source=True, row_source_pad=99,
                               index_dtype=np.int64, unpadded_end=True)
        assert r.out is None and isinstance(r.row_source, np.ndarray)
        assert r.row_source.dtype == np.int64
        want = ref.scatter(None, ids_t, 4, layout=layout, alignment=4,
                           expert_map=emap_t, capacity=cap)
        assert r.out_index.tolist() == want.out_index
        assert r.row_source.reshape(-1).tolist() == ref.row_source(want, 99)
        assert r.expert_end.tolist() == want.end_unpadded


# ---------------------------------------------------------------- unpadded_end


@needs_0_3
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("index_only", [False, True],
                         ids=["rows", "indexonly"])
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES, ids=str)
def test_unpadded_end(device, layout, index_only, index_dtype):
    e = 6
    gen, ids, emap = case("ue%s%s" % (layout, index_only), 26, 3, e, 8,
                          device=device)
    x = None if index_only else make_rows(26, 8, torch.bfloat16, gen, device)
    capacity = 10 if layout == "masked" else None
    kw = dict(layout=layout, alignment=8, expert_map=emap, capacity=capacity,
              index_dtype=index_dtype)
    res = moescatter.scatter(x, ids, e, unpadded_end=True, **kw)
    padded = moescatter.scatter(x, ids, e, **kw)
    finish(device)
    want = ref.scatter(None, ids.cpu(), e, layout=layout, alignment=8,
                       expert_map=emap.cpu(), capacity=capacity)
    check_index_outputs(res, want, layout, index_dtype, unpadded_end=True)
    check_index_outputs(padded, want, layout, index_dtype)
    # The case tells the two apart: some expert has padding (or drops).
    assert want.end_unpadded != want.end
    start, counts = res.expert_start.cpu(), res.counts.cpu()
    fill = res.masked_m.cpu() if layout == "masked" else counts
    assert torch.equal(res.expert_end.cpu(), start + fill)
    if x is not None:
        out = res.out.cpu().reshape(-1, 8)
        for row, t in want.placed.items():
            assert ref.same_bits(out[row], x[t].cpu())


# ---------------------------------------------------------------- errors


@needs_0_3
def test_index_only_errors(device):
    gen, ids, _ = case("err", 6, 2, 3, device=device)
    xs = make_scales(6, 1, gen, device)
    with pytest.raises(moescatter.Error) as info:
        moescatter.scatter(None, ids, 3, xs)
    assert isinstance(info.value, ValueError)
    assert "x_scales" in info.value.message
    with pytest.raises(moescatter.Error) as info:
        moescatter.scatter(None, ids, 3, zero_padding=True, alignment=4)
    assert info.value.status_name == "MOES_ERR_INVALID_FLAGS"
    assert "index-only" in info.value.message
    with pytest.raises(ValueError, match="scales_mn_major"):
        moescatter.scatter(None, ids, 3, scales_mn_major=True)
    with pytest.raises(ValueError, match="topk_ids"):
        moescatter.scatter(None, ids[0], 3)
    with pytest.raises(TypeError):
        moescatter.scatter(None, [[0, 1]], 3)
    bad = ids.clone()
    bad[3, 1] = 3
    with pytest.raises(moescatter.Error) as info:
        moescatter.scatter(None, bad, 3, row_source=True)
        finish(device)
    assert info.value.status_name == "MOES_ERR_INVALID_ID"
    assert "ids[3][1] = 3" in info.value.message
    with pytest.raises(moescatter.Error) as info:
        moescatter.scatter(None, ids, 3, alignment=1, capacity=2)
        finish(device)
    assert info.value.status_name == "MOES_ERR_CAPACITY"


def test_an_older_library_refuses_them(monkeypatch):
    """With a 0.2 library (simulated: the package asks the version once)
    the 0.3 arguments raise instead of being ignored; the rest works."""
    monkeypatch.setattr(_lib, "VERSION", (0, 2, 0))
    gen, ids, _ = case("old", 6, 2, 3)
    x = make_rows(6, 8, torch.float32, gen)
    for call in (lambda: moescatter.scatter(x, ids, 3, row_source=True),
                 lambda: moescatter.scatter(None, ids, 3),
                 lambda: moescatter.scatter(x, ids, 3, unpadded_end=True),
                 lambda: moescatter.align_block_size(ids, 4, 3)):
        with pytest.raises(moescatter.Error) as info:
            call()
        assert isinstance(info.value, ValueError)
        assert "0.3 or later" in info.value.message
        assert "0.2.0" in info.value.message
    r = moescatter.scatter(x, ids, 3, alignment=4)
    assert r.row_source is None


def test_compat_after_row_source(device):
    """compat's ep_scatter shares the context's argument struct with
    scatter: a row_source left there by an earlier call must not be
    written by it."""
    if not _lib.HAS_INDEX_ONLY:
        pytest.skip("no row_source before 0.3")
    from moescatter import compat
    gen, ids, _ = case("compat", 12, 2, 3, device=device)
    x = make_rows(12, 128, torch.float32, gen, device)
    first = moescatter.scatter(x, ids, 3, row_source=True, capacity=3 * 128)
    finish(device)
    kept = first.row_source.clone()
    m = 3 * 128
    out = torch.zeros(m, 128, device=device)
    m_idx = torch.empty(m, dtype=torch.int32, device=device)
    oi = torch.empty(12, 2, dtype=torch.int32, device=device)
    start = torch.empty(3, dtype=torch.int32, device=device)
    counts = torch.zeros(3, dtype=torch.int32, device=device)
    first.row_source.fill_(-42)
    compat.ep_scatter(x, None, ids, counts, start, out, None, m_idx, oi)
    finish(device)
    assert (first.row_source == -42).all()
    # And the scatter itself is the one the row_source described.
    placed = oi.reshape(-1)
    assert sorted(placed[placed >= 0].tolist()) == \
        sorted(i for i, v in enumerate(kept.tolist()) if v >= 0)


# ---------------------------------------------------------------- align


ALIGN_CASES = [
    # (N, K, E, block_size)
    (1, 1, 1, 1), (3, 2, 4, 4), (17, 2, 8, 16), (64, 8, 32, 16),
    (40, 4, 9, 64), (5, 6, 64, 32), (1, 2, 32, 128), (2, 1, 7, 3),
    (0, 4, 5, 16), (128, 2, 16, 128), (33, 3, 6, 1), (9, 8, 257, 32),
]


def align_case(n, k, e, bs, with_map, device, ids_dtype=torch.int32):
    name = "al%d.%d.%d.%d.%s.%s" % (n, k, e, bs, with_map, ids_dtype)
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    ids = make_ids(n, k, e, gen, ids_dtype, device=device)
    emap = None
    if with_map:
        # About half the global experts here, the rest -1.
        emap = make_map(e, max(1, e // 2), gen, device)
    return ids, emap


def check_align(got, ids, bs, e, emap, pad_sorted_ids):
    sorted_ids, expert_ids, post = got
    want = ref.align_block_size(ids.cpu(), bs, e,
                                None if emap is None else emap.cpu(),
                                pad_sorted_ids)
    for t in got:
        assert t.dtype == torch.int32 and t.device == ids.device
        assert t.dim() == 1 and t.is_contiguous()
    assert post.shape == (1,)
    assert sorted_ids.tolist() == want[0]
    assert expert_ids.tolist() == want[1]
    assert post.tolist() == want[2]
    return want


@needs_0_3
@pytest.mark.parametrize("n,k,e,bs", ALIGN_CASES, ids=str)
@pytest.mark.parametrize("pad_sorted_ids", [False, True],
                         ids=["unpadded", "padded"])
@pytest.mark.parametrize("with_map", [False, True], ids=["nomap", "map"])
def test_align_block_size(device, n, k, e, bs, pad_sorted_ids, with_map):
    ids, emap = align_case(n, k, e, bs, with_map, device)
    got = moescatter.align_block_size(ids, bs, e, expert_map=emap,
                                      pad_sorted_ids=pad_sorted_ids)
    finish(device)
    want = check_align(got, ids, bs, e, emap, pad_sorted_ids)
    numel = n * k
    size = numel + e * (bs - 1)
    if pad_sorted_ids:
        size = -(-size // bs) * bs
    if numel < e:
        size = min(numel * bs, size)
    assert got[0].shape[0] == size
    assert got[1].shape[0] == -(-size // bs)
    # Every choice with a (local) expert is there once, and only those.
    real = [v for v in want[0] if v < numel]
    assert len(real) == len(set(real))


@needs_0_3
@pytest.mark.parametrize("ids_dtype", INDEX_DTYPES, ids=str)
def test_align_block_size_ids_dtype_and_shape(device, ids_dtype):
    ids, emap = align_case(50, 4, 12, 16, True, device, ids_dtype)
    got = moescatter.align_block_size(ids, 16, 12, emap)
    finish(device)
    check_align(got, ids, 16, 12, emap, False)
    # A flat [numel] topk_ids is the same choices.
    flat_got = moescatter.align_block_size(ids.reshape(-1), 16, 12, emap)
    finish(device)
    for a, b in zip(got, flat_got):
        assert torch.equal(a, b)
    # Strided ids: the logical flat index.
    wide = torch.stack([ids, torch.full_like(ids, 5)], 2)[:, :, 0]
    assert wide.stride(1) == 2
    strided = moescatter.align_block_size(wide, 16, 12, emap)
    finish(device)
    for a, b in zip(got, strided):
        assert torch.equal(a, b)


@needs_0_3
def test_align_block_size_map_with_no_local_choice(device):
    """Every choice goes elsewhere: no rows, no blocks."""
    ids = torch.tensor([[0, 2], [2, -1], [0, 0]], dtype=torch.int32,
                       device=device)
    emap = torch.tensor([-1, 0, -1, 1], dtype=torch.int32, device=device)
    sorted_ids, expert_ids, post = moescatter.align_block_size(
        ids, 4, 4, emap)
    finish(device)
    assert post.tolist() == [0]
    assert sorted_ids.tolist() == [6] * (6 + 4 * 3)
    assert expert_ids.tolist() == [-1] * 5


@needs_0_3
def test_align_block_size_numpy():
    ids_t, emap_t = align_case(20, 3, 10, 8, True, "cpu")
    got = moescatter.align_block_size(ids_t.numpy(), 8, 10, emap_t.numpy(),
                                      pad_sorted_ids=True)
    want = ref.align_block_size(ids_t, 8, 10, emap_t, True)
    for a, w in zip(got, want):
        assert isinstance(a, np.ndarray) and a.dtype == np.int32
        assert a.flags.c_contiguous and a.tolist() == w


@needs_0_3
def test_align_block_size_errors(device):
    ids = torch.tensor([[0, 3], [1, -1]], dtype=torch.int32, device=device)
    with pytest.raises(moescatter.Error) as info:
        moescatter.align_block_size(ids, 4, 3)
        finish(device)
    assert info.value.status_name == "MOES_ERR_INVALID_ID"
    with pytest.raises(moescatter.Error) as info:
        moescatter.align_block_size(ids, 0, 4)
    assert info.value.status_name == "MOES_ERR_INVALID_ALIGNMENT"
    with pytest.raises(moescatter.Error) as info:
        moescatter.align_block_size(ids, 4, 0)
    assert info.value.status_name == "MOES_ERR_INVALID_SIZE"
    emap = torch.tensor([0, 1, -1], dtype=torch.int32, device=device)
    with pytest.raises(ValueError, match="expert_map"):
        moescatter.align_block_size(ids, 4, 4, emap)
    with pytest.raises(ValueError, match="topk_ids"):
        moescatter.align_block_size(ids.reshape(1, 2, 2), 4, 4)
    with pytest.raises(TypeError):
        moescatter.align_block_size([[0, 1]], 4, 4)
    # A map entry at or past its length has no local expert to name.
    emap = torch.tensor([0, 4, -1, 1], dtype=torch.int32, device=device)
    with pytest.raises(moescatter.Error) as info:
        moescatter.align_block_size(ids, 4, 4, emap)
        finish(device)
    assert info.value.status_name == "MOES_ERR_INVALID_MAP"


# ---------------------------------------------------------------- CUDA


_cuda_ok, _cuda_why = cuda_backend_usable()
needs_cuda = pytest.mark.skipif(not _cuda_ok, reason=_cuda_why)


@needs_0_3
@needs_cuda
@pytest.mark.parametrize("layout", LAYOUTS)
def test_index_only_same_as_cpu(layout):
    gen, ids, emap = case("cuda" + layout, 300, 8, 16, 64, torch.int64)
    kw = dict(layout=layout, alignment=32, label_padding=True,
              capacity=40 if layout == "masked" else None, row_source=True,
              row_source_pad=300 * 8, unpadded_end=layout != "contiguous")
    rc = moescatter.scatter(None, ids, 16, expert_map=emap, **kw)
    rg = moescatter.scatter(None, ids.cuda(), 16, expert_map=emap.cuda(),
                            **kw)
    moescatter.synchronize()
    for a, b in zip(rc, rg):
        assert (a is None) == (b is None)
        if a is not None:
            assert b.is_cuda and torch.equal(a, b.cpu())


@needs_0_3
@needs_cuda
@pytest.mark.parametrize("with_map", [False, True], ids=["nomap", "map"])
def test_align_block_size_cuda_graph(with_map):
    """align_block_size captured once and replayed on new ids copied into
    the static input: no host synchronization inside."""
    n, k, e, bs = 96, 8, 64, 16
    gen = torch.Generator().manual_seed(5)
    static_ids = make_ids(n, k, e, gen, device="cuda")
    emap = make_map(e, 24, gen, "cuda") if with_map else None

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            moescatter.align_block_size(static_ids, bs, e, emap)
    torch.cuda.current_stream().wait_stream(side)
    moescatter.synchronize()

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        got = moescatter.align_block_size(static_ids, bs, e, emap)

    for trial in range(3):
        static_ids.copy_(make_ids(n, k, e, gen, device="cuda"))
        graph.replay()
        torch.cuda.synchronize()
        moescatter.synchronize()
        check_align(got, static_ids, bs, e, emap, False)
        eager = moescatter.align_block_size(static_ids, bs, e, emap)
        for a, b in zip(got, eager):
            assert torch.equal(a, b), trial

# SPDX-License-Identifier: MIT
"""moescatter.compat against what LightLLM's and vLLM's ep_scatter and
ep_gather compute, with the differences the module documents."""
import pytest
import torch

import moescatter
from moescatter import compat
from moescatter.compat import vllm
import reference as ref
from conftest import ROW_DTYPES, finish, make_ids, make_map, make_rows


def roundup(v, a=128):
    return (v + a - 1) // a * a


def check_scatter(x, xs, ids, emap, e, out, out_s, m_idx, oi, start,
                  sentinel):
    """What both Triton kernels leave, with our documented choices where
    they leave garbage or an order of atomics."""
    loc = ref.local_ids(ids.cpu(), e, None if emap is None else emap.cpu())
    counts = [sum(row.count(j) for row in loc) for j in range(e)]
    starts, pos = [], 0
    for c in counts:
        starts.append(pos)
        pos += roundup(c)
    assert start.tolist() == starts
    m = m_idx.tolist()
    for j in range(e):
        assert m[starts[j]:starts[j] + roundup(counts[j])] == \
            [j] * roundup(counts[j])
    assert all(v == -1 for v in m[pos:])
    out_c, oi_l = out.cpu(), oi.tolist()
    placed = set()
    for t, row in enumerate(loc):
        for k, j in enumerate(row):
            r = oi_l[t][k]
            if j < 0:
                assert r == -1
                continue
            assert starts[j] <= r < starts[j] + counts[j]
            assert ref.same_bits(out_c[r], x[t].cpu())
            if xs is not None:
                s = xs.shape[1]
                assert ref.same_bits(out_s[r, :s].cpu(), xs[t].cpu())
            placed.add(r)
    # Ascending t*K + k within each expert: the rows of each expert in
    # out_index order increase.
    for j in range(e):
        rows = [oi_l[t][k] for t, row in enumerate(loc)
                for k, jj in enumerate(row) if jj == j]
        assert rows == sorted(rows)
    for r in range(out.shape[0]):
        if r not in placed:
            assert ref.same_bits(out_c[r], sentinel[r])


@pytest.mark.parametrize("dtype", ROW_DTYPES, ids=str)
def test_lightllm_pattern(device, dtype):
    """LightLLM: DeepEP's counts, already rounded up to 128; buffers of
    exactly their sum."""
    gen = torch.Generator().manual_seed(8)
    n, k, e, h = 40, 4, 6, 256
    ids = make_ids(n, k, e, gen, device=device)
    x = make_rows(n, h, dtype, gen, device)
    xs = torch.rand(n, h // 128, generator=gen).to(device)
    counts = torch.bincount(ids[ids >= 0].long().cpu(), minlength=e)
    aligned = ((counts + 127) // 128 * 128).int().to(device)
    m = int(aligned.sum())
    out = make_rows(m, h, dtype, gen, device)
    sentinel = out.cpu().clone()
    out_s = torch.zeros(m, h // 128, device=device)
    m_idx = torch.empty(m, dtype=torch.int32, device=device)
    oi = torch.empty(n, k, dtype=torch.int32, device=device)
    start = torch.empty_like(aligned)
    compat.ep_scatter(x, xs, ids, aligned, start, out, out_s, m_idx, oi)
    finish(device)
    check_scatter(x, xs, ids, None, e, out, out_s, m_idx, oi, start,
                  sentinel)
    w = torch.rand(n, k, generator=gen).to(device)
    y = torch.randn(m, h, generator=gen).to(torch.bfloat16).to(device)
    res = torch.empty(n, h, dtype=torch.bfloat16, device=device)
    assert compat.ep_gather(y, ids, w, oi, res) is None
    finish(device)
    assert ref.same_bits(res.cpu(), ref.gather(y.cpu(), oi.cpu(), w.cpu()))


@pytest.mark.parametrize("mn_major", [False, True],
                         ids=["rowmajor", "mnmajor"])
def test_vllm_pattern(device, mn_major):
    """vLLM: real counts, the map, buffers of compute_aligned_M's bound,
    m_indices zeroed beforehand."""
    gen = torch.Generator().manual_seed(9)
    n, k, e_global, e, h = 33, 8, 32, 8, 384
    ids = make_ids(n, k, e_global, gen, torch.int64, device=device)
    emap = make_map(e_global, e, gen, device)
    counts = moescatter.count(ids, e, expert_map=emap)
    m = roundup(n * k + e * 127)
    x = make_rows(n, h, torch.bfloat16, gen, device)
    xs = torch.rand(n, h // 128, generator=gen).to(device)
    out = torch.zeros(m, h, dtype=torch.bfloat16, device=device)
    if mn_major:
        out_s = torch.zeros(h // 128, m, device=device).t()
    else:
        out_s = torch.zeros(m, h // 128, device=device)
    m_idx = torch.zeros(m, dtype=torch.int32, device=device)
    oi = torch.empty(n, k, dtype=torch.int32, device=device)
    start = torch.empty(e, dtype=torch.int32, device=device)
    vllm.ep_scatter(x, xs, ids, counts, emap, start, out, out_s, m_idx, oi)
    finish(device)
    check_scatter(x, xs, ids, emap, e, out, out_s, m_idx, oi, start,
                  torch.zeros(m, h, dtype=torch.bfloat16))
    w = torch.rand(n, k, generator=gen).to(device)
    y = torch.randn(m, h, generator=gen).to(device)
    res = torch.empty(n, h, device=device)
    vllm.ep_gather(y, ids, w, oi, emap, res)
    finish(device)
    assert ref.same_bits(res.cpu(), ref.gather(y.cpu(), oi.cpu(), w.cpu()))
    assert vllm.count_expert_num_tokens(ids, e, emap).tolist() == \
        counts.tolist()


def test_keywords_as_vllm_calls_them(device):
    gen = torch.Generator().manual_seed(1)
    ids = make_ids(5, 2, 4, gen, device=device)
    x = torch.randn(5, 128, generator=gen).to(device)
    m = 4 * 128
    kw = dict(recv_x=x, recv_x_scale=None, recv_topk=ids,
              num_recv_tokens_per_expert=torch.zeros(4, dtype=torch.int32,
                                                     device=device),
              expert_start_loc=torch.empty(4, dtype=torch.int32,
                                           device=device),
              expert_map=None,
              output_tensor=torch.empty(m, 128, device=device),
              output_tensor_scale=None,
              m_indices=torch.empty(m, dtype=torch.int32, device=device),
              output_index=torch.empty(5, 2, dtype=torch.int32,
                                       device=device))
    compat.ep_scatter(**kw)
    vllm.ep_scatter(**kw)
    finish(device)
    want = ref.scatter(x.cpu(), ids.cpu(), 4)
    assert kw["output_index"].tolist() == want.out_index


def test_errors(device):
    ids = torch.tensor([[0, 9]], dtype=torch.int32, device=device)
    x = torch.ones(1, 128, device=device)
    args = lambda m, idx_dtype=torch.int32: (  # noqa: E731
        x, None, ids, torch.zeros(2, dtype=torch.int32, device=device),
        torch.empty(2, dtype=idx_dtype, device=device),
        torch.empty(m, 128, device=device), None,
        torch.empty(m, dtype=torch.int32, device=device),
        torch.empty(1, 2, dtype=torch.int32, device=device))
    with pytest.raises(moescatter.Error) as info:
        compat.ep_scatter(*args(256))
        finish(device)
    assert info.value.status_name == "MOES_ERR_INVALID_ID"
    ids[0, 1] = 1
    with pytest.raises(moescatter.Error) as info:
        compat.ep_scatter(*args(128))   # two experts need 256 rows
        finish(device)
    assert info.value.status_name == "MOES_ERR_CAPACITY"
    with pytest.raises(TypeError, match="expert_start_loc: dtype"):
        compat.ep_scatter(*args(256, torch.int64))
    a = list(args(256))
    a[5] = torch.empty(100, 128, device=device)
    with pytest.raises(ValueError, match="output_tensor"):
        compat.ep_scatter(*a)


def test_fast_and_checked_paths_agree(device, monkeypatch):
    """The common case takes the straight path; one token (or anything
    unusual) takes the checked one: same results."""
    gen = torch.Generator().manual_seed(6)
    results = []
    for n in (1, 5):
        ids = make_ids(n, 2, 4, gen, device=device)
        x = torch.randn(n, 256, generator=gen).to(device)
        xs = torch.rand(n, 2, generator=gen).to(device)
        m = 4 * 128
        out = torch.zeros(m, 256, device=device)
        out_s = torch.zeros(m, 2, device=device)
        m_idx = torch.empty(m, dtype=torch.int32, device=device)
        oi = torch.empty(n, 2, dtype=torch.int32, device=device)
        start = torch.empty(4, dtype=torch.int32, device=device)
        counts = torch.zeros(4, dtype=torch.int32, device=device)
        w = torch.rand(n, 2, generator=gen).to(device)
        res = torch.empty(n, 256, device=device)
        for fast in (True, False):
            if not fast:
                monkeypatch.setattr(compat, "_scatter_fast",
                                    lambda *a: False)
                monkeypatch.setattr(compat, "_gather_fast", lambda *a: False)
            compat.ep_scatter(x, xs, ids, counts, start, out, out_s, m_idx,
                              oi)
            compat.ep_gather(out, ids, w, oi, res)
            finish(device)
            results.append((oi.clone(), m_idx.clone(), start.clone(),
                            out.clone(), out_s.clone(), res.clone()))
            monkeypatch.undo()
        for a, b in zip(results[-2], results[-1]):
            assert ref.same_bits(a.cpu(), b.cpu())
        want = ref.scatter(x.cpu(), ids.cpu(), 4, xs.cpu())
        assert oi.tolist() == want.out_index
    if device == "cpu":
        # The straight path really is taken in the common case.
        monkeypatch.setattr(compat, "_scatter_checked", None)
        compat.ep_scatter(x, xs, ids, counts, start, out, out_s, m_idx, oi)


def test_device_mismatch(device):
    other = "cpu" if device != "cpu" else None
    if other is None:
        pytest.skip("needs a second kind of device")
    ids = torch.zeros(4, 2, dtype=torch.int32, device=device)
    x = torch.ones(4, 128, device=device)
    with pytest.raises(ValueError, match="m_indices is on cpu"):
        compat.ep_scatter(x, None, ids, torch.zeros(2, dtype=torch.int32),
                          torch.empty(2, dtype=torch.int32, device=device),
                          torch.empty(256, 128, device=device), None,
                          torch.empty(256, dtype=torch.int32, device=other),
                          torch.empty(4, 2, dtype=torch.int32, device=device))


def test_ids_rows_must_match_x(device):
    ids = torch.zeros(3, 2, dtype=torch.int32, device=device)
    x = torch.ones(1, 128, device=device)
    with pytest.raises(moescatter.Error, match="topk_ids has 3 rows, x 1"):
        compat.ep_scatter(x, None, ids, torch.zeros(2, dtype=torch.int32),
                          torch.empty(2, dtype=torch.int32, device=device),
                          torch.empty(256, 128, device=device), None,
                          torch.empty(256, dtype=torch.int32, device=device),
                          torch.empty(1, 2, dtype=torch.int32, device=device))


def test_ep_scatter_refuses_expanded_scales():
    # Strides (0, 0) would read as "dense" to the library, which would
    # then write capacity * S floats from the view's one element.
    n, e, h = 2, 2, 256
    x = torch.randn(n, h)
    xs = torch.ones(n, 2)
    ids = torch.tensor([[0, 1], [1, 0]], dtype=torch.int32)
    counts = torch.zeros(e, dtype=torch.int32)
    start = torch.empty(e, dtype=torch.int32)
    cap = 256
    out = torch.empty(cap, h)
    m_idx = torch.empty(cap, dtype=torch.int32)
    oi = torch.empty(n, 2, dtype=torch.int32)
    backing = torch.full((64,), -7.0)
    out_s = backing[:1].view(1, 1).expand(cap, 2)
    with pytest.raises(ValueError, match="output_tensor_scale"):
        compat.ep_scatter(x, xs, ids, counts, start, out, out_s, m_idx, oi)
    assert bool((backing == -7.0).all())

# SPDX-License-Identifier: MIT
"""CUDA only: the same bits as the CPU, torch's current stream, deferred
data errors, CUDA graph capture and replay, several devices. (Every other
test file also runs on CUDA tensors through the ``device`` fixture.)"""
import pytest
import torch

import moescatter
from moescatter import compat
import reference as ref
from conftest import (ROW_DTYPES, cuda_backend_usable, make_ids, make_map,
                      make_rows, make_scales)


_usable, _why = cuda_backend_usable()
pytestmark = pytest.mark.skipif(not _usable, reason=_why)


def test_backend_info():
    info = moescatter.backend_info("cuda")
    assert info["backend"] == "cuda"
    major, minor = torch.cuda.get_device_capability(0)
    assert info["compute_capability"] == 10 * major + minor
    assert info["device_name"] and info["multiprocessors"] > 0
    assert moescatter.backend_info(torch.device("cuda", 0))["backend"] == \
        "cuda"


@pytest.mark.parametrize("layout", ["contiguous", "grouped", "masked"])
@pytest.mark.parametrize("dtype", ROW_DTYPES, ids=str)
def test_same_bits_as_cpu(layout, dtype):
    gen = torch.Generator().manual_seed(17)
    n, k, e, h = 300, 8, 16, 7168
    ids = make_ids(n, k, 64, gen, torch.int64)
    emap = make_map(64, e, gen)
    x = make_rows(n, h, dtype, gen)
    xs = make_scales(n, h // 128, gen, pow2=True)
    kw = dict(layout=layout, expert_map=emap, scale_format="ue8m0",
              zero_padding=True, label_padding=True,
              capacity=40 if layout == "masked" else None)
    rc = moescatter.scatter(x, ids, e, xs, **kw)
    kw["expert_map"] = emap.cuda()
    rg = moescatter.scatter(x.cuda(), ids.cuda(), e, xs.cuda(), **kw)
    moescatter.synchronize()
    for a, b in zip(rc, rg):
        assert (a is None) == (b is None)
        if a is not None:
            assert ref.same_bits(a, b.cpu())
    w = torch.rand(n, k, generator=gen)
    y = torch.randn(rc.out.reshape(-1, h).shape[0], h, generator=gen).to(
        torch.bfloat16)
    for out_dtype in (torch.bfloat16, torch.float16, torch.float32):
        gc = moescatter.gather(y, rc.out_index, w, out_dtype=out_dtype)
        gg = moescatter.gather(y.cuda(), rg.out_index, w.cuda(),
                               out_dtype=out_dtype)
        assert ref.same_bits(gc, gg.cpu())


def test_current_stream_is_used():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4096, 1024, generator=gen).cuda()
    ids = make_ids(4096, 8, 32, gen, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        r = moescatter.scatter(x, ids, 32)
        out = moescatter.gather(r.out, r.out_index, out_dtype=torch.float32)
        # The work is on `side`: after waiting for it alone, results are in.
    side.synchronize()
    expect = x * (ids >= 0).sum(1, keepdim=True).float()
    assert torch.allclose(out, expect, rtol=1e-6, atol=0)
    moescatter.synchronize()


def test_deferred_error_then_recovery():
    ids = torch.tensor([[0, 1], [300, 0]], dtype=torch.int32, device="cuda")
    x = torch.ones(2, 128, device="cuda")
    m = 256
    out = torch.full((m, 128), 5.0, device="cuda")
    m_idx = torch.full((m,), 7, dtype=torch.int32, device="cuda")
    oi = torch.full((2, 2), 9, dtype=torch.int32, device="cuda")
    start = torch.full((2,), 3, dtype=torch.int32, device="cuda")
    # The call returns: the kernels find the bad id and write nothing.
    compat.ep_scatter(x, None, ids, torch.zeros(2, dtype=torch.int32,
                                                device="cuda"),
                      start, out, None, m_idx, oi)
    # A later, valid call on the device does nothing either, until the
    # error is read.
    good = moescatter.count(ids.clamp(max=1), 2)
    with pytest.raises(moescatter.Error) as info:
        moescatter.synchronize()
    assert info.value.status_name == "MOES_ERR_INVALID_ID"
    assert "300" in info.value.message
    assert (out == 5).all() and (m_idx == 7).all() and (oi == 9).all()
    assert (start == 3).all()
    del good
    moescatter.synchronize()  # cleared
    assert moescatter.count(ids.clamp(max=1), 2).tolist() == [2, 2]


def test_graph_capture_and_replay():
    """The compat pair and the allocating API, captured once and replayed
    on new inputs copied into the static buffers."""
    torch.manual_seed(0)
    n, k, e, h = 64, 8, 32, 2048
    m = (n * k + e * 127 + 127) // 128 * 128
    static_x = torch.randn(n, h, device="cuda").to(torch.bfloat16)
    # UE8M0 packs exact powers of two only.
    static_xs = torch.pow(2.0, torch.randint(-8, 8, (n, h // 128)).float()
                          ).to("cuda")
    static_ids = torch.randint(-1, e, (n, k), device="cuda", dtype=torch.int32)
    static_w = torch.rand(n, k, device="cuda")
    out = torch.zeros(m, h, device="cuda", dtype=torch.bfloat16)
    out_s = torch.zeros(m, h // 128, device="cuda")
    m_idx = torch.empty(m, dtype=torch.int32, device="cuda")
    oi = torch.empty(n, k, dtype=torch.int32, device="cuda")
    start = torch.empty(e, dtype=torch.int32, device="cuda")
    counts = torch.zeros(e, dtype=torch.int32, device="cuda")
    res = torch.empty(n, h, device="cuda", dtype=torch.bfloat16)

    def step():
        compat.ep_scatter(static_x, static_xs, static_ids, counts, start,
                          out, out_s, m_idx, oi)
        compat.ep_gather(out, static_ids, static_w, oi, res)
        r = moescatter.scatter(static_x, static_ids, e, static_xs,
                               scale_format="ue8m0")
        g = moescatter.gather(r.out, r.out_index, static_w)
        return r, g

    # Warm up on a side stream (as torch.cuda.graph asks), so that nothing
    # is allocated for the first time inside the capture.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    moescatter.synchronize()

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        r, g = step()

    for trial in range(3):
        static_x.copy_(torch.randn(n, h, device="cuda").to(torch.bfloat16))
        static_ids.copy_(torch.randint(-1, e, (n, k), device="cuda",
                                       dtype=torch.int32))
        static_w.copy_(torch.rand(n, k, device="cuda"))
        graph.replay()
        torch.cuda.synchronize()
        moescatter.synchronize()
        want = ref.scatter(static_x.cpu(), static_ids.cpu(), e,
                           static_xs.cpu(), scale_format="ue8m0")
        assert r.out_index.tolist() == want.out_index, trial
        assert r.m_indices.tolist() == want.m_indices
        want_g = ref.gather(r.out.cpu(), r.out_index.cpu(), static_w.cpu())
        assert ref.same_bits(g.cpu(), want_g)
        assert oi.tolist() == want.out_index
        want_res = ref.gather(out.cpu(), oi.cpu(), static_w.cpu())
        assert ref.same_bits(res.cpu(), want_res)


@pytest.mark.skipif(torch.cuda.device_count() < 2,
                    reason="one CUDA device")
def test_second_device():
    x = torch.randn(16, 256, device="cuda:1")
    ids = torch.randint(0, 4, (16, 2), device="cuda:1", dtype=torch.int32)
    r = moescatter.scatter(x, ids, 4)
    g = moescatter.gather(r.out, r.out_index)
    moescatter.synchronize("cuda:1")
    assert g.device == x.device
    assert torch.equal(g, x * 2)
    assert moescatter.backend_info("cuda:1")["backend"] == "cuda"

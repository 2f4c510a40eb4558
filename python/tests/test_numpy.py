# SPDX-License-Identifier: MIT
"""NumPy arrays in and out, on the CPU backend: the same bits as torch."""
import pytest
import torch

import moescatter
import reference as ref

np = pytest.importorskip("numpy")


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("ids_dtype", ["int32", "int64"])
@pytest.mark.parametrize("layout", ["contiguous", "grouped", "masked"])
def test_numpy_scatter_gather(dtype, ids_dtype, layout):
    gen = torch.Generator().manual_seed(4)
    x_t = torch.randn(12, 20, generator=gen).to(getattr(torch, dtype))
    ids_t = torch.randint(-1, 5, (12, 3), generator=gen).to(
        getattr(torch, ids_dtype))
    xs_t = torch.rand(12, 1, generator=gen) + 0.5
    w_t = torch.rand(12, 3, generator=gen)
    x, ids, xs, w = x_t.numpy(), ids_t.numpy(), xs_t.numpy(), w_t.numpy()
    cap = 4 if layout == "masked" else None
    r = moescatter.scatter(x, ids, 5, xs, layout=layout, alignment=4,
                           capacity=cap, index_dtype=np.int64)
    rt = moescatter.scatter(x_t, ids_t, 5, xs_t, layout=layout, alignment=4,
                            capacity=cap, index_dtype=torch.int64)
    assert isinstance(r.out, np.ndarray) and r.out.dtype == x.dtype
    assert r.out_index.dtype == np.int64
    assert (r.out_index == rt.out_index.numpy()).all()
    assert (r.counts == rt.counts.numpy()).all()
    want = ref.scatter(x_t, ids_t, 5, xs_t, layout=layout, alignment=4,
                       capacity=cap)
    out = torch.from_numpy(r.out.reshape(-1, 20))
    for row, t in want.placed.items():
        assert ref.same_bits(out[row], x_t[t])
    y = r.out.reshape(-1, 20)
    g = moescatter.gather(y, r.out_index, w, out_dtype="float32")
    assert isinstance(g, np.ndarray) and g.dtype == np.float32
    want_g = ref.gather(torch.from_numpy(y), torch.from_numpy(r.out_index),
                        w_t, torch.float32)
    assert ref.same_bits(torch.from_numpy(g), want_g)


def test_numpy_strided_and_count():
    wide = np.array([[2, 9, 0, 9], [0, 9, 1, 9], [1, 9, 2, 9], [0, 9, 0, 9]],
                    dtype=np.int32)
    ids = wide[:, ::2]                  # column stride 2
    assert moescatter.count(ids, 3).tolist() == [4, 2, 2]
    x = np.asfortranarray(np.arange(8, dtype=np.float32).reshape(4, 2))
    r = moescatter.scatter(x, ids, 3, alignment=1)
    assert r.out.tolist() == x[[0, 1, 3, 3, 1, 2, 0, 2]].tolist()


def test_numpy_errors():
    x = np.ones((2, 2), dtype=np.float64)
    ids = np.zeros((2, 1), dtype=np.int32)
    with pytest.raises(TypeError):
        moescatter.scatter(x, ids, 1)
    out = np.zeros((2, 2), dtype=np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        moescatter.gather(np.ones((2, 2), np.float32), ids, out=out)
    with pytest.raises(TypeError, match="bfloat16"):
        moescatter.gather(np.ones((2, 2), np.float32), ids,
                          out_dtype=torch.bfloat16)

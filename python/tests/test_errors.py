# SPDX-License-Identifier: MIT
"""Errors: the status name and the library's message, ValueError for bad
arguments and data, TypeError for dtypes, nothing written on failure."""
import pytest
import torch

import moescatter
from conftest import finish


def raises_status(device, name, fn, *args, **kw):
    with pytest.raises(moescatter.Error) as info:
        fn(*args, **kw)
        finish(device)
    e = info.value
    assert e.status_name == name, str(e)
    assert isinstance(e, ValueError)
    assert e.message and e.message in str(e) and name in str(e)
    return e


def test_bad_id(device):
    ids = torch.tensor([[0, 1], [5, 0]], dtype=torch.int32, device=device)
    x = torch.ones(2, 4, device=device)
    e = raises_status(device, "MOES_ERR_INVALID_ID", moescatter.scatter, x,
                      ids, 3)
    assert "ids[1][0] = 5" in e.message
    assert e.reason == moescatter.Error(8, "").reason != ""
    raises_status(device, "MOES_ERR_INVALID_ID", moescatter.count, ids, 3)


def test_bad_map(device):
    ids = torch.tensor([[0, 1]], dtype=torch.int32, device=device)
    emap = torch.tensor([0, 7], dtype=torch.int32, device=device)
    e = raises_status(device, "MOES_ERR_INVALID_MAP", moescatter.count, ids,
                      2, expert_map=emap)
    assert "expert_map[1]" in e.message


def test_capacity_too_small(device):
    ids = torch.zeros(5, 1, dtype=torch.int32, device=device)
    x = torch.ones(5, 2, device=device)
    e = raises_status(device, "MOES_ERR_CAPACITY", moescatter.scatter, x,
                      ids, 1, alignment=1, capacity=4)
    assert "5" in e.message


def test_bad_out_index_leaves_out_alone(device):
    y = torch.ones(4, 3, device=device)
    oi = torch.tensor([[0, 9]], dtype=torch.int32, device=device)
    out = torch.full((1, 3), 7.0, device=device)
    e = raises_status(device, "MOES_ERR_INVALID_OUT_INDEX", moescatter.gather,
                      y, oi, out=out)
    assert "out_index[0][1] = 9" in e.message
    assert out.tolist() == [[7.0, 7.0, 7.0]]


def test_sizes(device):
    x = torch.ones(2, 4, device=device)
    ids = torch.zeros(2, 0, dtype=torch.int32, device=device)
    raises_status(device, "MOES_ERR_INVALID_SIZE", moescatter.scatter, x,
                  ids, 3)
    ids = torch.zeros(2, 1, dtype=torch.int32, device=device)
    raises_status(device, "MOES_ERR_INVALID_SIZE", moescatter.scatter, x,
                  ids, 0)
    raises_status(device, "MOES_ERR_INVALID_ALIGNMENT", moescatter.scatter,
                  x, ids, 2, alignment=0)


@pytest.mark.parametrize("what", ["x", "ids", "scales", "map", "weights",
                                  "out_index", "y", "out_dtype",
                                  "index_dtype"])
def test_dtypes_are_type_errors(device, what):
    x = torch.ones(2, 4, device=device)
    ids = torch.zeros(2, 1, dtype=torch.int32, device=device)
    with pytest.raises(TypeError):
        if what == "x":
            moescatter.scatter(x.int(), ids, 1)
        elif what == "ids":
            moescatter.scatter(x, ids.float(), 1)
        elif what == "scales":
            moescatter.scatter(x, ids, 1, torch.ones(2, 1, device=device,
                                                     dtype=torch.float16))
        elif what == "map":
            moescatter.count(ids, 1, expert_map=torch.zeros(
                1, dtype=torch.int64, device=device))
        elif what == "weights":
            moescatter.gather(x, ids, torch.ones(2, 1, dtype=torch.float64,
                                                 device=device))
        elif what == "out_index":
            moescatter.gather(x, ids.short())
        elif what == "y":
            moescatter.gather(x.double(), ids)
        elif what == "out_dtype":
            moescatter.gather(x, ids, out_dtype=torch.int32)
        else:
            moescatter.scatter(x, ids, 1, index_dtype=torch.int16)


def test_argument_errors(device):
    x = torch.ones(2, 4, device=device)
    ids = torch.zeros(2, 1, dtype=torch.int32, device=device)
    with pytest.raises(ValueError, match="layout"):
        moescatter.scatter(x, ids, 1, layout="sorted")
    with pytest.raises(ValueError, match="scale_format"):
        moescatter.scatter(x, ids, 1, torch.ones(2, 1, device=device),
                           scale_format="e8m0")
    with pytest.raises(ValueError, match="topk_ids"):
        moescatter.scatter(x, ids[:1], 1)
    with pytest.raises(ValueError, match="x_scales"):
        moescatter.scatter(x, ids, 1, torch.ones(2, 1, device=device),
                           scale_block=2)
    with pytest.raises(ValueError, match="accumulate"):
        moescatter.gather(x, ids, accumulate=True)
    with pytest.raises(ValueError, match="out must be"):
        moescatter.gather(x, ids, out=torch.empty(3, 4, device=device))
    with pytest.raises(ValueError, match="strides"):
        moescatter.gather(x, ids, out=torch.empty(4, 2, device=device).t())
    with pytest.raises(ValueError, match="is on"):
        moescatter.scatter(x, ids.numpy() if device == "cpu" else ids.cpu(),
                           1)
    with pytest.raises(TypeError):
        moescatter.scatter([[1.0]], ids, 1)
    # What the package refuses itself carries a status too.
    with pytest.raises(moescatter.Error) as info:
        moescatter.scatter(x, ids[:1], 1)
    assert info.value.status_name == "MOES_ERR_INVALID_ARGUMENT"
    assert "topk_ids must be [N, K]" in info.value.message
    with pytest.raises(moescatter.Error) as info:
        moescatter.gather(x, ids, out=torch.empty(4, 2, device=device).t())
    assert info.value.status_name == "MOES_ERR_INVALID_STRIDE"


def test_error_classes():
    assert issubclass(moescatter.ArgumentError, moescatter.Error)
    assert issubclass(moescatter.ArgumentError, ValueError)
    assert issubclass(moescatter.BackendError, RuntimeError)
    with pytest.raises(moescatter.Error) as info:
        moescatter.scatter_capacity(1, 1, 1, alignment=0)
    assert info.value.status_name == "MOES_ERR_INVALID_ALIGNMENT"
    assert info.value.status == 7


def test_integers_past_int64_are_argument_errors():
    # ctypes stores ints modulo 2**64: 2**64 + 1 must not become 1.
    x = torch.ones(2, 256)
    ids = torch.zeros(2, 1, dtype=torch.int32)
    for kw in ({"alignment": 2 ** 64 + 1}, {"scale_block": 2 ** 64 + 2},
               {"capacity": 2 ** 63}):
        name = next(iter(kw))
        with pytest.raises(moescatter.ArgumentError, match=name):
            moescatter.scatter(x, ids, 1, **kw)
    with pytest.raises(moescatter.ArgumentError, match="num_experts"):
        moescatter.scatter(x, ids, -2 ** 63 - 1)


def test_foreign_byte_order_is_a_type_error():
    numpy = pytest.importorskip("numpy")
    x = numpy.arange(8, dtype=">f4").reshape(2, 4)
    ids = numpy.zeros((2, 1), dtype="<i4")
    with pytest.raises(TypeError, match="byte order"):
        moescatter.scatter(x, ids, 1)
    with pytest.raises(TypeError, match="topk_ids"):
        moescatter.scatter(x.astype("<f4"), ids.astype(">i4"), 1)


def test_tensors_that_require_grad_are_refused():
    # No gradient is computed: an output silently cut from the graph
    # would fail far from here, or train nothing.
    x = torch.ones(2, 4, requires_grad=True)
    ids = torch.zeros(2, 1, dtype=torch.int32)
    with pytest.raises(moescatter.ArgumentError, match="x requires grad"):
        moescatter.scatter(x, ids, 1)
    with torch.no_grad():
        moescatter.scatter(x, ids, 1)
    out = moescatter.scatter(x.detach(), ids, 1)
    w = torch.ones(2, 1, requires_grad=True)
    with pytest.raises(moescatter.ArgumentError, match="weights"):
        moescatter.gather(out.out, out.out_index, w)
    with torch.inference_mode():
        moescatter.gather(out.out, out.out_index, w)


def test_x_without_columns_is_a_size_error():
    # torch and NumPy alike: an empty tensor's pointer may be 0, which is
    # not the index-only call (x=None) that the caller did not ask for.
    ids = torch.zeros(3, 1, dtype=torch.int32)
    for x in (torch.empty(3, 0), torch.ones(3, 4)[:, :0]):
        e = raises_status("cpu", "MOES_ERR_INVALID_SIZE", moescatter.scatter,
                          x, ids, 1)
        assert "hidden = 0" in e.message
    numpy = pytest.importorskip("numpy")
    e = raises_status("cpu", "MOES_ERR_INVALID_SIZE", moescatter.scatter,
                      numpy.empty((3, 0), numpy.float32), ids.numpy(), 1)


def test_sparse_tensors_are_argument_errors():
    ids = torch.zeros(2, 1, dtype=torch.int32).to_sparse()
    with pytest.raises(moescatter.ArgumentError, match="topk_ids is a"):
        moescatter.scatter(torch.ones(2, 4), ids, 1)


def test_numpy_outputs_in_ml_dtypes(monkeypatch):
    # bf16 and fp8 NumPy arrays come from ml_dtypes: the outputs of their
    # dtype are allocated from it (a stand-in module here), and without it
    # the error says where the dtype comes from.
    import sys
    import types
    numpy = pytest.importorskip("numpy")
    from moescatter import _arrays, _lib
    fake = types.ModuleType("ml_dtypes")
    fake.bfloat16 = numpy.dtype("float16")
    monkeypatch.setitem(sys.modules, "ml_dtypes", fake)
    out = _arrays.empty(_arrays.NUMPY, (2, 3), _lib.DTYPE_BF16, "out")
    assert out.dtype == fake.bfloat16 and out.shape == (2, 3)
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    with pytest.raises(TypeError, match="ml_dtypes"):
        _arrays.empty(_arrays.NUMPY, (2,), _lib.DTYPE_FP8_E4M3, "out")


def test_sizes_must_be_integers(device):
    """3.9 experts is not 3, nor "4" 4: a size that is not an integer is
    refused by name before anything runs."""
    ids = torch.tensor([[0, 1], [2, 0]], dtype=torch.int32, device=device)
    x = torch.ones(2, 4, device=device)
    for bad in (3.9, "4", 1.5):
        e = raises_status(device, "MOES_ERR_INVALID_ARGUMENT",
                          moescatter.scatter, x, ids, bad)
        assert "num_experts" in e.message and "not an integer" in e.message
    e = raises_status(device, "MOES_ERR_INVALID_ARGUMENT", moescatter.scatter,
                      x, ids, 3, alignment=2.5)
    assert "alignment" in e.message
    e = raises_status(device, "MOES_ERR_INVALID_ARGUMENT", moescatter.scatter,
                      x, ids, 3, row_source=True, row_source_pad=1.5)
    assert "row_source_pad" in e.message and "not an integer" in e.message
    for call, name in ((lambda: moescatter.scatter_capacity(2, 2.5, 3), "top_k"),
                       (lambda: moescatter.scatter_capacity(2, 2, "3"),
                        "num_experts"),
                       (lambda: moescatter.reserve_workspace(2.0, 2, 3,
                                                             device=device),
                        "n_tokens")):
        with pytest.raises(moescatter.Error) as info:
            call()
        assert name in str(info.value) and "not an integer" in str(info.value)


def test_scales_must_have_exactly_s_columns(device):
    """x_scales wider than ceil(H / scale_block) would have its extra
    columns ignored, the scales of a different block size read as these."""
    ids = torch.tensor([[0], [1]], dtype=torch.int32, device=device)
    x = torch.ones(2, 8, device=device)
    wide = torch.ones(2, 5, device=device)
    e = raises_status(device, "MOES_ERR_INVALID_ARGUMENT", moescatter.scatter,
                      x, ids, 2, wide, scale_block=2)
    assert "x_scales" in e.message


def test_outputs_too_large_to_allocate_are_named():
    """An output sized by a huge num_experts or capacity cannot be
    allocated: MOES_ERR_OUT_OF_MEMORY naming it, before the library runs
    (4 TiB, which no allocator here hands out)."""
    ids = torch.tensor([[0, 1], [2, 0]], dtype=torch.int32)
    with pytest.raises(moescatter.Error) as info:
        moescatter.count(ids, 2 ** 40)
    e = info.value
    assert e.status_name == "MOES_ERR_OUT_OF_MEMORY"
    assert isinstance(e, RuntimeError)
    assert e.message.startswith("cannot allocate counts: shape (%d,) of int32"
                                % 2 ** 40)
    x = torch.ones(2, 4)
    with pytest.raises(moescatter.Error) as info:
        moescatter.scatter(x, ids, 3, capacity=2 ** 40)
    assert info.value.status_name == "MOES_ERR_OUT_OF_MEMORY"
    assert "cannot allocate out:" in info.value.message
    with pytest.raises(moescatter.Error) as info:
        moescatter.count(ids.numpy(), 2 ** 40)
    assert "cannot allocate counts" in info.value.message


def test_count_dtype_error_names_dtype():
    ids = torch.zeros(1, 1, dtype=torch.int32)
    with pytest.raises(TypeError, match="^dtype must be int32 or int64"):
        moescatter.count(ids, 2, dtype=torch.float32)

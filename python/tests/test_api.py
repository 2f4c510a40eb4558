# SPDX-License-Identifier: MIT
"""The package itself: import, version, backend_info, the capacity helper,
synchronize on the CPU, NumPy-only use."""
import os
import subprocess
import sys

import pytest

import moescatter
import reference as ref


def test_exports():
    for name in moescatter.__all__:
        assert getattr(moescatter, name).__doc__, name
    assert moescatter.__version__.count(".") == 2
    assert os.path.exists(moescatter.library_path())


def test_backend_info_cpu():
    info = moescatter.backend_info()
    assert info["backend"] == "cpu" and info["device_name"] == "cpu"
    assert info["cpu_threads"] >= 1 and "cpu" in info["backends_compiled"]
    assert info["version"] == moescatter.__version__
    assert moescatter.backend_info("cpu")["backend"] == "cpu"


def test_backend_info_cuda_without_cuda():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available() and \
            "cuda" in moescatter.backend_info()["backends_compiled"]:
        assert moescatter.backend_info("cuda")["backend"] == "cuda"
        return
    with pytest.raises(moescatter.BackendError) as info:
        moescatter.backend_info("cuda")
    assert info.value.status_name == "MOES_ERR_BACKEND_UNAVAILABLE"


@pytest.mark.parametrize("layout", ["contiguous", "grouped", "masked"])
@pytest.mark.parametrize("n,k,e,a", [(0, 8, 256, 128), (1, 8, 256, 128),
                                     (128, 8, 256, 128), (5000, 8, 16, 64),
                                     (3, 2, 7, 1)])
def test_capacity(layout, n, k, e, a):
    assert moescatter.scatter_capacity(n, k, e, layout=layout, alignment=a) \
        == ref.capacity_bound(layout, n, k, e, a)


def test_capacity_formula_is_the_librarys():
    """The capacity scatter computes in Python is the library's answer, and
    what the library refuses (sizes past int64, bad alignment) still
    raises its error."""
    import ctypes
    import itertools
    from moescatter import _lib, _ops
    for lay, n, k, e, a in itertools.product(
            (_lib.LAYOUT_CONTIGUOUS, _lib.LAYOUT_GROUPED, _lib.LAYOUT_MASKED),
            (0, 1, 3, 128, 4096, 10 ** 12, 2 ** 62), (1, 2, 8, 9),
            (1, 3, 32, 256, 10 ** 6), (1, 2, 3, 64, 128, 1000, 0, -5)):
        cap = ctypes.c_int64()
        st = _lib.LIB.moes_scatter_capacity(None, lay, n, k, e, a,
                                            ctypes.byref(cap))
        if st == _lib.MOES_OK:
            assert _ops._capacity(None, lay, n, k, e, a) == cap.value
        else:
            with pytest.raises(moescatter.Error) as info:
                _ops._capacity(None, lay, n, k, e, a)
            assert info.value.status == st


def test_synchronize_cpu_is_a_no_op():
    moescatter.synchronize()
    moescatter.synchronize("cpu")


def test_works_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np, moescatter\n"
            "ids = np.array([[0, 1], [1, -1]], dtype=np.int32)\n"
            "x = np.arange(4, dtype=np.float32).reshape(2, 2)\n"
            "r = moescatter.scatter(x, ids, 2, alignment=1)\n"
            "print(r.out_index.tolist(), moescatter.count(ids, 2).tolist())\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    res = subprocess.run([sys.executable, "-c", code], env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[[0, 1], [2, -1]] [1, 2]"


def test_library_path_override(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path),
               MOESCATTER_LIBRARY=str(tmp_path / "nowhere.so"))
    res = subprocess.run([sys.executable, "-c", "import moescatter"],
                         env=env, capture_output=True, text=True)
    assert res.returncode != 0
    assert "MOESCATTER_LIBRARY" in res.stderr and "nowhere.so" in res.stderr


def test_example_moe_layer_runs():
    example = os.path.join(os.path.dirname(__file__), os.pardir, "examples",
                           "moe_layer.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    res = subprocess.run([sys.executable, example, "--tokens", "24"],
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "moe_layer on" in res.stdout


def test_forced_backend_is_an_error():
    """MOES_BACKEND overrides what a program asks for; the package takes the
    backend from the arrays' device, so a forced other one is an error."""
    code = ("import torch, moescatter\n"
            "try:\n"
            "    moescatter.count(torch.zeros(1, 1, dtype=torch.int32), 1)\n"
            "except moescatter.Error as e:\n"
            "    print(e.status_name)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path),
               MOES_BACKEND="cuda")
    res = subprocess.run([sys.executable, "-c", code], env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "MOES_ERR_BACKEND_UNAVAILABLE"


def test_threads_share_a_context():
    import threading
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 128, generator=gen)
    ids = torch.randint(-1, 8, (64, 4), generator=gen).int()
    want = moescatter.scatter(x, ids, 8, alignment=8)
    bad = []

    def work():
        for _ in range(50):
            r = moescatter.scatter(x, ids, 8, alignment=8)
            if not torch.equal(r.out_index, want.out_index) or \
                    not torch.equal(r.m_indices, want.m_indices):
                bad.append(1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad

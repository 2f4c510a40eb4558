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

# SPDX-License-Identifier: MIT
"""Torch tensors and NumPy arrays as the library sees them: a pointer, a
dtype, rows and a row stride in elements.

The library takes every matrix as rows of contiguous elements at a row
stride. An input whose elements are not contiguous within a row (or whose
rows overlap, as after expand) is copied into a dense array first, so any
strided input gives the right result; an output buffer given by the caller
must have that form, since the library cannot write anywhere else.
"""
from . import _lib

try:
    import torch
except ImportError:  # NumPy arrays still work
    torch = None
try:
    import numpy
except ImportError:
    numpy = None

KIND_TORCH = 0
KIND_NUMPY = 1
CPU = -1  # the device number of host memory

_TORCH_DTYPES = {}
_TORCH_FROM_CODE = {}
if torch is not None:
    for _name, _code in (("float8_e4m3fn", _lib.DTYPE_FP8_E4M3),
                         ("float8_e5m2", _lib.DTYPE_FP8_E5M2),
                         ("bfloat16", _lib.DTYPE_BF16),
                         ("float16", _lib.DTYPE_FP16),
                         ("float32", _lib.DTYPE_FP32),
                         ("int32", _lib.DTYPE_INT32),
                         ("int64", _lib.DTYPE_INT64)):
        _dt = getattr(torch, _name, None)
        if _dt is not None:  # fp8 exists from torch 2.1 on
            _TORCH_DTYPES[_dt] = _code
            _TORCH_FROM_CODE[_code] = _dt

# NumPy has fp16, fp32 and the integers; bf16 and fp8 come from ml_dtypes
# where it is installed, and are matched by name.
_NUMPY_NAMES = {"float16": _lib.DTYPE_FP16, "float32": _lib.DTYPE_FP32,
                "int32": _lib.DTYPE_INT32, "int64": _lib.DTYPE_INT64,
                "bfloat16": _lib.DTYPE_BF16,
                "float8_e4m3fn": _lib.DTYPE_FP8_E4M3,
                "float8_e5m2": _lib.DTYPE_FP8_E5M2}
_NUMPY_FROM_CODE = {_lib.DTYPE_FP16: "float16", _lib.DTYPE_FP32: "float32",
                    _lib.DTYPE_INT32: "int32", _lib.DTYPE_INT64: "int64"}


def is_torch(a):
    return torch is not None and isinstance(a, torch.Tensor)


def is_numpy(a):
    return numpy is not None and isinstance(a, numpy.ndarray)


def space_of(a, name):
    """(kind, device) of an array: device -1 for host memory, else the CUDA
    device number."""
    if is_torch(a):
        if a.is_cuda:
            return KIND_TORCH, a.get_device()
        if a.is_cpu and a.layout == torch.strided:
            return KIND_TORCH, CPU
        raise ValueError("%s: a %s tensor on %s; the library takes strided "
                         "tensors on the CPU or on CUDA devices"
                         % (name, a.layout, a.device))
    if is_numpy(a):
        return KIND_NUMPY, CPU
    raise TypeError("%s: expected a torch.Tensor or a numpy.ndarray, got %s"
                    % (name, type(a).__name__))


def check_space(a, name, space):
    s = space_of(a, name)
    if s != space:
        raise ValueError("%s is on %s but the first array is on %s"
                         % (name, space_name(s), space_name(space)))


def space_name(space):
    kind, dev = space
    if kind == KIND_NUMPY:
        return "the host (numpy)"
    return "cpu" if dev == CPU else "cuda:%d" % dev


def dtype_code(a, name, allowed=None):
    """The library's dtype of an array; TypeError for any other dtype."""
    if is_torch(a):
        code = _TORCH_DTYPES.get(a.dtype)
        shown = a.dtype
    else:
        code = _NUMPY_NAMES.get(a.dtype.name)
        if code is not None and a.dtype.itemsize != _SIZES[code]:
            code = None
        shown = a.dtype
    if code is None or (allowed is not None and code not in allowed):
        want = allowed if allowed is not None else sorted(_TORCH_FROM_CODE)
        raise TypeError("%s: dtype %s is not one the library takes here (%s)"
                        % (name, shown, ", ".join(code_name(c) for c in want)))
    return code


_SIZES = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 8}
_CODE_NAMES = {1: "float8_e4m3fn", 2: "float8_e5m2", 3: "bfloat16",
               4: "float16", 5: "float32", 6: "int32", 7: "int64"}


def code_name(code):
    return _CODE_NAMES.get(code, str(code))


def ptr(a):
    if is_torch(a):
        return a.data_ptr()
    return a.__array_interface__["data"][0]


def shape(a):
    return tuple(a.shape)


def strides(a):
    """Strides in elements."""
    if is_torch(a):
        return a.stride()
    item = a.itemsize
    st = a.strides
    if any(s % item for s in st):
        return None  # not a whole number of elements: copy
    return tuple(s // item for s in st)


def dense(a):
    """A dense row-major copy (or a itself when it is one already)."""
    if is_torch(a):
        return a.contiguous()
    return numpy.ascontiguousarray(a)


def _row_stride(shp, st):
    """The row stride of a 2-D array whose rows are contiguous runs, or None
    when it has none the library can follow."""
    rows, cols = shp
    if st is None:
        return None
    if cols > 1 and st[1] != 1:
        return None
    if rows <= 1:
        return cols if cols > 0 else 1  # a lone row: any stride covers it
    if st[0] < cols:
        return None  # overlapping rows (expand) or a transposed matrix
    return st[0]


def as_input_matrix(a, name, ndim=2):
    """(array, row stride) of a 2-D input; a dense copy when its strides are
    not the library's."""
    if a.ndim != ndim:
        raise ValueError("%s must have %d dimensions, got shape %s"
                         % (name, ndim, shape(a)))
    rs = _row_stride(shape(a), strides(a))
    if rs is None:
        a = dense(a)
        rs = max(a.shape[1], 1)
    return a, rs


def output_row_stride(a, name):
    """The row stride of a 2-D output given by the caller."""
    if a.ndim != 2:
        raise ValueError("%s must have 2 dimensions, got shape %s"
                         % (name, shape(a)))
    rs = _row_stride(shape(a), strides(a))
    if rs is None:
        raise ValueError("%s: strides %s; the library writes rows of "
                         "contiguous elements that do not overlap"
                         % (name, strides(a)))
    check_writeable(a, name)
    return rs


def as_input_vector(a, name):
    if a.ndim != 1:
        raise ValueError("%s must have 1 dimension, got shape %s"
                         % (name, shape(a)))
    st = strides(a)
    if a.shape[0] > 1 and (st is None or st[0] != 1):
        a = dense(a)
    return a


def check_output_vector(a, name, length):
    if a.ndim != 1 or a.shape[0] < length:
        raise ValueError("%s must be a vector of at least %d entries, got "
                         "shape %s" % (name, length, shape(a)))
    st = strides(a)
    if a.shape[0] > 1 and (st is None or st[0] != 1):
        raise ValueError("%s must be contiguous, got strides %s"
                         % (name, st))
    check_writeable(a, name)


def check_writeable(a, name):
    if is_numpy(a) and not a.flags.writeable:
        raise ValueError("%s is read-only" % name)


def empty(space, shp, code):
    kind, dev = space
    if kind == KIND_TORCH:
        device = "cpu" if dev == CPU else torch.device("cuda", dev)
        return torch.empty(shp, dtype=_TORCH_FROM_CODE[code], device=device)
    name = _NUMPY_FROM_CODE.get(code)
    if name is None:
        raise TypeError("NumPy has no %s dtype" % code_name(code))
    return numpy.empty(shp, dtype=name)


def index_code(index_dtype):
    """int32 or int64 from a torch dtype, a NumPy dtype or a name."""
    if index_dtype is None:
        return _lib.DTYPE_INT32
    if torch is not None and isinstance(index_dtype, torch.dtype):
        code = _TORCH_DTYPES.get(index_dtype)
    else:
        try:
            name = numpy.dtype(index_dtype).name if numpy is not None \
                else str(index_dtype)
        except TypeError:
            name = str(index_dtype)
        code = _NUMPY_NAMES.get(name)
    if code not in (_lib.DTYPE_INT32, _lib.DTYPE_INT64):
        raise TypeError("index_dtype must be int32 or int64, got %s"
                        % (index_dtype,))
    return code


def float_code(dtype):
    """bf16, fp16 or fp32 from a torch dtype, a NumPy dtype or a name."""
    if torch is not None and isinstance(dtype, torch.dtype):
        code = _TORCH_DTYPES.get(dtype)
    else:
        try:
            name = numpy.dtype(dtype).name if numpy is not None else str(dtype)
        except TypeError:
            name = str(dtype)
        code = _NUMPY_NAMES.get(name)
    if code not in (_lib.DTYPE_BF16, _lib.DTYPE_FP16, _lib.DTYPE_FP32):
        raise TypeError("out_dtype must be bfloat16, float16 or float32, "
                        "got %s" % (dtype,))
    return code

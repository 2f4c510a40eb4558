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

_arg_error = _lib.argument_error

CPU = -1  # the space of torch CPU tensors

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


TorchTensor = torch.Tensor if torch is not None else ()
NDArray = numpy.ndarray if numpy is not None else ()
NUMPY = -2  # the space of NumPy arrays; torch tensors: CPU or a device


def is_torch(a):
    return isinstance(a, TorchTensor)


def is_numpy(a):
    return isinstance(a, NDArray)


def space_of(a, name):
    """Where an array lives: NUMPY, CPU (a torch CPU tensor) or the CUDA
    device number of a torch CUDA tensor."""
    if isinstance(a, TorchTensor):
        if a.is_cuda:
            return a.get_device()
        if a.is_cpu and a.layout == torch.strided:
            return CPU
        raise _arg_error("%s: a %s tensor on %s; the library takes strided "
                         "tensors on the CPU or on CUDA devices"
                         % (name, a.layout, a.device))
    if isinstance(a, NDArray):
        return NUMPY
    raise TypeError("%s: expected a torch.Tensor or a numpy.ndarray, got %s"
                    % (name, type(a).__name__))


def space_name(space):
    if space == NUMPY:
        return "the host (a NumPy array)"
    return "cpu" if space == CPU else "cuda:%d" % space


def check_space(a, name, space):
    """a must live where the call's first array does (a cheap test: it runs
    for every array of every call)."""
    if isinstance(a, TorchTensor):
        if a.layout != torch.strided:
            raise _arg_error("%s is a %s tensor; the library takes dense "
                             "(strided) ones" % (name, a.layout))
        if space >= 0:
            if a.is_cuda and a.get_device() == space:
                return
        elif space == CPU:
            if a.is_cpu:
                return
    elif isinstance(a, NDArray) and space == NUMPY:
        return
    raise _arg_error("%s is on %s but the first array is on %s"
                     % (name, space_name(space_of(a, name)),
                        space_name(space)))


def _dtype_error(a, name, allowed):
    raise TypeError("%s: dtype %s is not one the library takes here (%s)"
                    % (name, a.dtype, ", ".join(code_name(c)
                                                for c in allowed)))


def dtype_code(a, name, allowed):
    """The library's dtype of an array; TypeError for any other dtype."""
    if isinstance(a, TorchTensor):
        code = _TORCH_DTYPES.get(a.dtype)
    else:
        if not a.dtype.isnative:
            # The library reads the bytes as this machine orders them.
            raise TypeError("%s: dtype %s is not in this machine's byte "
                            "order; convert it first (a.astype(a.dtype."
                            "newbyteorder('=')))" % (name, a.dtype.str))
        code = _NUMPY_NAMES.get(a.dtype.name)
        if code is not None and a.dtype.itemsize != _SIZES[code]:
            code = None
    if code not in allowed:
        _dtype_error(a, name, allowed)
    return code


_SIZES = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 8}
_CODE_NAMES = {1: "float8_e4m3fn", 2: "float8_e5m2", 3: "bfloat16",
               4: "float16", 5: "float32", 6: "int32", 7: "int64"}


def code_name(code):
    return _CODE_NAMES.get(code, str(code))


def shape(a):
    return tuple(a.shape)


def dense(a):
    """A dense row-major copy (or a itself when it is one already)."""
    if isinstance(a, TorchTensor):
        return a.contiguous()
    return numpy.ascontiguousarray(a)


def _np_strides(a):
    """Strides in elements, or None when one is not a whole number of
    elements."""
    item = a.itemsize
    st = a.strides
    for s in st:
        if s % item:
            return None
    return tuple(s // item for s in st)


def _np_ptr(a):
    return a.__array_interface__["data"][0]


def _row_stride(rows, cols, s0, s1):
    """The row stride the library can follow, or None."""
    if cols > 1 and s1 != 1:
        return None
    if rows <= 1:
        return cols if cols > 0 else 1  # a lone row: any stride covers it
    if s0 < cols:
        return None  # overlapping rows (expand) or a transposed matrix
    return s0


def _matrix(a, name, allowed, space):
    """What matrix_in and matrix_out both check of a 2-D array: its space,
    dtype and rank. Returns (dtype code, rows, columns, row stride or None
    when its rows are not contiguous elements that do not overlap, the
    strides in elements or None)."""
    check_space(a, name, space)
    if isinstance(a, TorchTensor):
        code = _TORCH_DTYPES.get(a.dtype)
        if code not in allowed:
            _dtype_error(a, name, allowed)
        st = tuple(a.stride()) if a.dim() == 2 else None
    else:
        code = dtype_code(a, name, allowed)
        st = _np_strides(a) if a.ndim == 2 else None
    if len(a.shape) != 2:
        raise _arg_error("%s must have 2 dimensions, got shape %s"
                         % (name, tuple(a.shape)))
    rows, cols = a.shape
    rs = None if st is None else _row_stride(rows, cols, st[0], st[1])
    return code, rows, cols, rs, st


def matrix_in(a, name, allowed, space):
    """An input matrix as (array to keep alive, pointer, rows, columns, row
    stride, dtype code). A matrix whose elements are not contiguous within a
    row, or whose rows overlap, is copied first."""
    code, rows, cols, rs, _ = _matrix(a, name, allowed, space)
    if rs is None:
        if isinstance(a, TorchTensor):
            a = a.contiguous()
        else:
            a = numpy.ascontiguousarray(a)
        rs = max(cols, 1)
    ptr = a.data_ptr() if isinstance(a, TorchTensor) else _np_ptr(a)
    return a, ptr, rows, cols, rs, code


def matrix_out(a, name, allowed, space):
    """An output matrix given by the caller as (pointer, rows, columns, row
    stride, dtype code): the library writes rows of contiguous elements
    that do not overlap, and nowhere else."""
    code, rows, cols, rs, st = _matrix(a, name, allowed, space)
    if not isinstance(a, TorchTensor) and not a.flags.writeable:
        raise _arg_error("%s is read-only" % name)
    if rs is None:
        raise _arg_error("%s: strides %s; the library writes rows of "
                         "contiguous elements that do not overlap"
                         % (name, st), _lib.MOES_ERR_INVALID_STRIDE)
    ptr = a.data_ptr() if isinstance(a, TorchTensor) else _np_ptr(a)
    return ptr, rows, cols, rs, code


def vector_in(a, name, allowed, space):
    """An input vector as (array to keep alive, pointer, length, code)."""
    check_space(a, name, space)
    code = dtype_code(a, name, allowed)
    if a.ndim != 1:
        raise _arg_error("%s must have 1 dimension, got shape %s"
                         % (name, shape(a)))
    n = a.shape[0]
    if isinstance(a, TorchTensor):
        if n > 1 and a.stride(0) != 1:
            a = a.contiguous()
        return a, a.data_ptr(), n, code
    st = _np_strides(a)
    if n > 1 and (st is None or st[0] != 1):
        a = numpy.ascontiguousarray(a)
    return a, _np_ptr(a), n, code


def vector_out(a, name, allowed, space, length):
    """The pointer of an output vector of at least length entries."""
    check_space(a, name, space)
    if isinstance(a, TorchTensor):
        code = _TORCH_DTYPES.get(a.dtype)
        if code not in allowed:
            _dtype_error(a, name, allowed)
        ok = a.dim() == 1 and a.shape[0] >= length and \
            (a.shape[0] <= 1 or a.stride(0) == 1)
        p = a.data_ptr()
    else:
        dtype_code(a, name, allowed)
        st = _np_strides(a)
        ok = a.ndim == 1 and a.shape[0] >= length and \
            (a.shape[0] <= 1 or (st is not None and st[0] == 1))
        if not a.flags.writeable:
            raise _arg_error("%s is read-only" % name)
        p = _np_ptr(a)
    if not ok:
        raise _arg_error("%s must be a contiguous vector of at least %d "
                         "entries, got shape %s" % (name, length, shape(a)))
    return p


def ptr(a):
    if isinstance(a, TorchTensor):
        return a.data_ptr()
    return _np_ptr(a)


_DEVICES = {}


def empty(space, shp, code, name):
    """A new array of shape shp; a failed allocation (an output sized by a
    huge num_experts or capacity, say) is MOES_ERR_OUT_OF_MEMORY naming
    the output, not the allocator's words alone."""
    try:
        return _empty(space, shp, code)
    except (RuntimeError, MemoryError) as e:
        # torch says "can't allocate memory" (CPU) or raises
        # OutOfMemoryError, a RuntimeError (CUDA); NumPy a MemoryError.
        if not isinstance(e, MemoryError) and \
                "alloc" not in str(e) and "memory" not in str(e):
            raise
        where = "cpu" if space in (CPU, NUMPY) else "cuda:%d" % space
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise _lib.make_error(
            _lib.MOES_ERR_OUT_OF_MEMORY,
            "cannot allocate %s: shape %s of %s on %s (%s)"
            % (name, tuple(shp), code_name(code), where, first)) from None


def _empty(space, shp, code):
    if space != NUMPY:
        device = _DEVICES.get(space)
        if device is None:
            device = torch.device("cpu") if space == CPU \
                else torch.device("cuda", space)
            _DEVICES[space] = device
        return torch.empty(shp, dtype=_TORCH_FROM_CODE[code], device=device)
    name = _NUMPY_FROM_CODE.get(code)
    if name is None:
        # bf16 and fp8 (inputs of those dtypes came from ml_dtypes): the
        # output in the same dtype.
        try:
            import ml_dtypes
            name = getattr(ml_dtypes, code_name(code))
        except (ImportError, AttributeError):
            raise TypeError("NumPy has no %s dtype (ml_dtypes gives one)"
                            % code_name(code)) from None
    return numpy.empty(shp, dtype=name)


def index_code(index_dtype, name="index_dtype"):
    """int32 or int64 from a torch dtype, a NumPy dtype or a name; the
    error names the caller's argument, `name`."""
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
        raise TypeError("%s must be int32 or int64, got %s"
                        % (name, index_dtype))
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

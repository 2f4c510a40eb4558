# SPDX-License-Identifier: MIT
"""The C library through ctypes: its structs, its functions, its errors, and
one context per (backend, device).

Nothing here needs a compiler: the C library is the shared object
_libmoescatter.so that make install puts inside the package, or the one at
the path in the environment variable MOESCATTER_LIBRARY, which wins.
"""
import ctypes
import os
import struct
import threading

c_int64 = ctypes.c_int64
c_int = ctypes.c_int
c_uint = ctypes.c_uint
c_size_t = ctypes.c_size_t
c_void_p = ctypes.c_void_p

# Status codes, dtypes, layouts and flags: the values of moescatter.h, which
# only ever appends to them.
STATUS_NAMES = {
    0: "MOES_OK",
    1: "MOES_ERR_NULL_POINTER",
    2: "MOES_ERR_INVALID_SIZE",
    3: "MOES_ERR_INVALID_STRIDE",
    4: "MOES_ERR_OVERFLOW",
    5: "MOES_ERR_INVALID_DTYPE",
    6: "MOES_ERR_INVALID_FLAGS",
    7: "MOES_ERR_INVALID_ALIGNMENT",
    8: "MOES_ERR_INVALID_ID",
    9: "MOES_ERR_INVALID_MAP",
    10: "MOES_ERR_INVALID_OUT_INDEX",
    11: "MOES_ERR_CAPACITY",
    12: "MOES_ERR_INVALID_ARGUMENT",
    13: "MOES_ERR_OUT_OF_MEMORY",
    14: "MOES_ERR_BACKEND_UNAVAILABLE",
    15: "MOES_ERR_DEVICE",
    16: "MOES_ERR_WORKSPACE",
    17: "MOES_ERR_INVALID_SCALE",
    18: "MOES_ERR_OVERLAP",
    19: "MOES_ERR_MISALIGNED",
}
MOES_OK = 0
MOES_ERR_INVALID_SIZE = 2
MOES_ERR_INVALID_STRIDE = 3
MOES_ERR_OVERFLOW = 4
MOES_ERR_INVALID_DTYPE = 5
MOES_ERR_INVALID_ALIGNMENT = 7
MOES_ERR_INVALID_ARGUMENT = 12
MOES_ERR_OUT_OF_MEMORY = 13
# Statuses that say the arguments or the data were wrong (the caller's
# fault), as opposed to the machine (memory, driver, workspace).
ARGUMENT_STATUSES = frozenset(list(range(1, 13)) + [17, 18, 19])

DTYPE_FP8_E4M3 = 1
DTYPE_FP8_E5M2 = 2
DTYPE_BF16 = 3
DTYPE_FP16 = 4
DTYPE_FP32 = 5
DTYPE_INT32 = 6
DTYPE_INT64 = 7

BACKEND_AUTO = 0
BACKEND_CPU = 1
BACKEND_CUDA = 2

LAYOUT_CONTIGUOUS = 1
LAYOUT_GROUPED = 2
LAYOUT_MASKED = 3

SCALES_NONE = 0
SCALES_FP32 = 1
SCALES_UE8M0 = 2

SCATTER_ZERO_PADDING = 0x1
SCATTER_LABEL_PADDING = 0x2
SCATTER_UNPADDED_END = 0x4  # since 0.3
SCATTER_CHECK_ONLY = 0x8  # since 0.3
GATHER_ACCUMULATE = 0x1
GATHER_CHECK_ONLY = 0x2  # since 0.3


class Error(Exception):
    """An error status of the C library, or an argument the package refused.

    Attributes: ``status`` (the moes_status number), ``status_name``
    ("MOES_ERR_INVALID_ID"), ``reason`` (the fixed English name of the
    status, "invalid expert id") and ``message`` (the library's detailed
    message, which names the argument and, for data errors, the element at
    fault).
    Errors about arguments and data are also ``ValueError`` (see
    ``ArgumentError``); errors of the machine (memory, driver, workspace)
    are also ``RuntimeError`` (see ``BackendError``).
    """

    def __init__(self, status, message, function=None):
        self.status = status
        self.status_name = STATUS_NAMES.get(status, "MOES_STATUS_%d" % status)
        self.reason = strerror(status)
        self.message = message
        self.function = function
        where = function + ": " if function else ""
        super().__init__("%s%s (%s): %s" % (where, self.status_name,
                                           self.reason, message))


class ArgumentError(Error, ValueError):
    """A bad argument or bad data (ids, map, out_index, capacity)."""


class BackendError(Error, RuntimeError):
    """Out of memory, a backend that cannot run, a driver error, or a
    workspace too small for the call."""


def argument_error(message, status=MOES_ERR_INVALID_ARGUMENT):
    """An argument the package itself refused (a shape, a device, strides
    the library cannot follow), as the library would word its status."""
    return ArgumentError(status, message)


def make_error(status, message, function=None):
    cls = ArgumentError if status in ARGUMENT_STATUSES else BackendError
    return cls(status, message, function)


# ---------------------------------------------------------------- structs


class ContextOptions(ctypes.Structure):
    _fields_ = [("struct_size", c_size_t), ("backend", c_int),
                ("cpu_threads", c_int), ("cuda_device", c_int)]


class ContextInfo(ctypes.Structure):
    _fields_ = [("struct_size", c_size_t), ("backend", c_int),
                ("cpu_threads", c_int), ("reason", ctypes.c_char * 256),
                ("device_name", ctypes.c_char * 256),
                ("device_multiprocessors", c_int),
                ("device_compute_capability", c_int),
                ("device_memory_bytes", c_int64)]


class Routing(ctypes.Structure):
    _fields_ = [("struct_size", c_size_t), ("n_tokens", c_int64),
                ("top_k", c_int64), ("ids", c_void_p), ("ids_dtype", c_int),
                ("ids_stride", c_int64), ("expert_map", c_void_p),
                ("n_experts_global", c_int64), ("n_experts", c_int64)]


class ScatterArgs(ctypes.Structure):
    _fields_ = [("struct_size", c_size_t), ("layout", c_int),
                ("alignment", c_int64), ("capacity", c_int64),
                ("flags", c_uint),
                ("x", c_void_p), ("x_dtype", c_int), ("hidden", c_int64),
                ("x_stride", c_int64),
                ("x_scales", c_void_p), ("scale_block", c_int64),
                ("x_scales_stride", c_int64),
                ("out", c_void_p), ("out_stride", c_int64),
                ("out_scales", c_void_p), ("out_scales_format", c_int),
                ("out_scales_row_stride", c_int64),
                ("out_scales_col_stride", c_int64),
                ("index_dtype", c_int), ("out_index", c_void_p),
                ("out_index_stride", c_int64), ("counts", c_void_p),
                ("expert_start", c_void_p), ("expert_end", c_void_p),
                ("m_indices", c_void_p), ("masked_m", c_void_p),
                ("n_dropped", c_void_p),
                # Since 0.3: a 0.2 library's struct_size leaves them out.
                ("row_source", c_void_p), ("row_source_pad", c_int64)]


class GatherArgs(ctypes.Structure):
    _fields_ = [("struct_size", c_size_t), ("flags", c_uint),
                ("n_tokens", c_int64), ("top_k", c_int64),
                ("hidden", c_int64),
                ("y", c_void_p), ("y_dtype", c_int), ("y_rows", c_int64),
                ("y_stride", c_int64),
                ("out_index", c_void_p), ("index_dtype", c_int),
                ("out_index_stride", c_int64),
                ("weights", c_void_p), ("weights_stride", c_int64),
                ("out", c_void_p), ("out_dtype", c_int),
                ("out_stride", c_int64)]


# The structs' bytes in one struct.pack_into: the hot paths fill every
# field with one call instead of one ctypes attribute store each (which
# costs about as much as the rest of a small call's Python work).
_PACK_CODES = {c_size_t: "Q", c_int: "i", c_uint: "I", c_int64: "q",
               c_void_p: "Q"}


def _packer(cls):
    """A struct.Struct that writes cls's fields, in _fields_ order, at
    their offsets (pointers as integers, 0 for NULL)."""
    fmt, pos = "=", 0
    for name, typ in cls._fields_:
        offset = getattr(cls, name).offset
        fmt += "x" * (offset - pos) + _PACK_CODES[typ]
        pos = offset + ctypes.sizeof(typ)
    fmt += "x" * (ctypes.sizeof(cls) - pos)
    packer = struct.Struct(fmt)
    assert packer.size == ctypes.sizeof(cls)
    return packer


ROUTING_PACK = _packer(Routing)
SCATTER_PACK = _packer(ScatterArgs)


# ---------------------------------------------------------------- loading


def library_path():
    """The shared object the package loads: $MOESCATTER_LIBRARY, else the
    _libmoescatter.so installed beside this file."""
    env = os.environ.get("MOESCATTER_LIBRARY")
    if env:
        return env
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "_libmoescatter.so")
    if not os.path.exists(path):
        raise ImportError(
            "moescatter: this copy of the package has no _libmoescatter.so "
            "(make install puts it there); set MOESCATTER_LIBRARY to the "
            "path of one")
    return path


def _load():
    path = library_path()
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise ImportError("moescatter: cannot load the C library %s: %s "
                          "(set MOESCATTER_LIBRARY to override the path)"
                          % (path, e)) from None
    P = ctypes.POINTER
    protos = {
        "moes_version": [P(c_int), P(c_int), P(c_int)],
        "moes_strerror": [c_int],
        "moes_backends_compiled": [P(c_uint)],
        "moes_context_options_init": [c_void_p],
        "moes_context_create": [P(c_void_p), c_void_p],
        "moes_context_destroy": [c_void_p],
        "moes_context_get_info": [c_void_p, c_void_p],
        "moes_last_error": [c_void_p],
        "moes_set_stream": [c_void_p, c_void_p],
        "moes_synchronize": [c_void_p],
        "moes_get_error": [c_void_p],
        "moes_reserve_workspace": [c_void_p, c_int64, c_int64, c_int64],
        "moes_routing_init": [c_void_p],
        "moes_count": [c_void_p, c_void_p, c_void_p, c_int],
        "moes_scatter_args_init": [c_void_p],
        "moes_scatter": [c_void_p, c_void_p, c_void_p],
        "moes_scatter_capacity": [c_void_p, c_int, c_int64, c_int64, c_int64,
                                  c_int64, P(c_int64)],
        "moes_gather_args_init": [c_void_p],
        "moes_gather": [c_void_p, c_void_p],
    }
    for name, argtypes in protos.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = c_int
    # Since 0.3 the struct's init takes the caller's size; the function
    # without it fills the 0.2 struct.
    try:
        lib.moes_scatter_args_init_sized.argtypes = [c_void_p, c_size_t]
        lib.moes_scatter_args_init_sized.restype = c_int
    except AttributeError:
        pass
    # Since 0.3: each token's distinct experts.
    try:
        lib.moes_distinct_experts.argtypes = [c_void_p, c_void_p, c_void_p,
                                              c_int, c_int64]
        lib.moes_distinct_experts.restype = c_int
    except AttributeError:
        pass
    lib.moes_strerror.restype = ctypes.c_char_p
    lib.moes_last_error.restype = ctypes.c_char_p
    # The caller-workspace hand-over (a workspace from torch's allocator):
    # used where the library has it, else calls use the library's own
    # workspace. Both are looked up once here.
    try:
        lib.moes_workspace_size.argtypes = [c_void_p, c_int64, c_int64,
                                            c_int64, P(c_int64)]
        lib.moes_workspace_size.restype = c_int
        lib.moes_set_workspace.argtypes = [c_void_p, c_void_p, c_int64]
        lib.moes_set_workspace.restype = c_int
        has_workspace_api = True
    except AttributeError:
        has_workspace_api = False
    return lib, path, has_workspace_api


LIB, LIBRARY_PATH, HAS_WORKSPACE_API = _load()


def strerror(status):
    return LIB.moes_strerror(status).decode("utf-8", "replace")


def last_error(ctx):
    msg = LIB.moes_last_error(ctx)
    return msg.decode("utf-8", "replace") if msg else ""


def _version_numbers():
    major, minor, patch = c_int(), c_int(), c_int()
    LIB.moes_version(ctypes.byref(major), ctypes.byref(minor),
                     ctypes.byref(patch))
    return major.value, minor.value, patch.value


# The version of the library loaded, asked once: what it can do follows.
VERSION = _version_numbers()
# row_source, the index-only scatter and MOES_SCATTER_UNPADDED_END.
HAS_INDEX_ONLY = VERSION >= (0, 3, 0)


def version():
    return "%d.%d.%d" % VERSION


def require(feature, since):
    """Refuses ``feature`` (words for the message) when the library loaded
    is older than ``since`` (major, minor): an older library would ignore
    the fields or refuse the flag with a message that does not say why."""
    if VERSION[:2] < tuple(since):
        raise ArgumentError(
            MOES_ERR_INVALID_ARGUMENT,
            "%s needs libmoescatter %d.%d or later, but the library loaded "
            "(%s) is %s" % (feature, since[0], since[1], LIBRARY_PATH,
                            version()))


def scatter_args_init(args):
    """moes_scatter_args_init for this package's struct: the sized init
    where the library has it (0.3 on), else the 0.2 one, which fills the
    0.2 struct that such a library knows."""
    sized = getattr(LIB, "moes_scatter_args_init_sized", None)
    if sized is not None:
        return sized(args, ctypes.sizeof(ScatterArgs))
    return LIB.moes_scatter_args_init(args)


def _check_struct_sizes():
    """The structs above must be the library's: a library of another version
    is refused at import rather than read or written wrongly. The one
    exception is moes_scatter_args of a 0.1 or 0.2 library, which ends
    before row_source: its init sets that smaller struct_size, the library
    then reads no further, and the features of the fields past it are
    refused (see require)."""
    for init, cls in ((LIB.moes_context_options_init, ContextOptions),
                      (LIB.moes_routing_init, Routing),
                      (scatter_args_init, ScatterArgs),
                      (LIB.moes_gather_args_init, GatherArgs)):
        scratch = ctypes.create_string_buffer(4096)
        init(scratch)
        size = c_size_t.from_buffer(scratch).value
        if size == ctypes.sizeof(cls):
            continue
        if cls is ScatterArgs and not HAS_INDEX_ONLY and \
                size == ScatterArgs.row_source.offset:
            continue
        raise ImportError(
            "moescatter: %s is %d bytes in %s but %d in this package: "
            "the package and the library are of different versions"
            % (cls.__name__, size, LIBRARY_PATH, ctypes.sizeof(cls)))


_check_struct_sizes()


def backends_compiled():
    mask = c_uint()
    LIB.moes_backends_compiled(ctypes.byref(mask))
    names = []
    if mask.value & (1 << BACKEND_CPU):
        names.append("cpu")
    if mask.value & (1 << BACKEND_CUDA):
        names.append("cuda")
    return names


# ---------------------------------------------------------------- contexts


class Context:
    """One library context, with the argument structs it reuses (filling a
    struct costs less than making one) and a lock: a context must not be
    used by two threads at once, and ctypes lets go of the GIL in calls."""

    __slots__ = ("handle", "backend", "device", "lock", "stream", "routing",
                 "scatter_args", "gather_args", "routing_ref", "scatter_ref",
                 "gather_ref", "workspace", "ws_sizes", "ws_given",
                 "routing_bytes", "scatter_bytes", "ws_memo", "__weakref__")

    def __init__(self, backend, device):
        opts = ContextOptions()
        LIB.moes_context_options_init(ctypes.byref(opts))
        opts.backend = backend
        opts.cuda_device = device if backend == BACKEND_CUDA else 0
        handle = c_void_p()
        st = LIB.moes_context_create(ctypes.byref(handle), ctypes.byref(opts))
        if st != MOES_OK:
            raise make_error(st, last_error(None), "moes_context_create")
        self.handle = handle.value
        info = self.info()
        if info["backend"] != ("cuda" if backend == BACKEND_CUDA else "cpu"):
            # MOES_BACKEND overrides what a program asks for; here the
            # buffers' device decides, so a forced backend cannot work.
            LIB.moes_context_destroy(self.handle)
            raise BackendError(
                14, "a %s context was asked for (the arrays' device) but the "
                "library opened %s: %s (is MOES_BACKEND set?)"
                % ("cuda" if backend == BACKEND_CUDA else "cpu",
                   info["backend"], info["reason"]), "moes_context_create")
        self.backend = backend
        self.device = device
        self.lock = threading.Lock()
        self.stream = None
        self.routing = Routing()
        LIB.moes_routing_init(ctypes.byref(self.routing))
        # Every field is set by each call; the sizes once, here.
        self.scatter_args = ScatterArgs()
        scatter_args_init(ctypes.byref(self.scatter_args))
        self.gather_args = GatherArgs()
        LIB.moes_gather_args_init(ctypes.byref(self.gather_args))
        # The same memory as bytes, for ROUTING_PACK and SCATTER_PACK.
        self.routing_bytes = (ctypes.c_char * ctypes.sizeof(Routing)) \
            .from_buffer(self.routing)
        self.scatter_bytes = (ctypes.c_char * ctypes.sizeof(ScatterArgs)) \
            .from_buffer(self.scatter_args)
        self.routing_ref = ctypes.byref(self.routing)
        self.scatter_ref = ctypes.byref(self.scatter_args)
        self.gather_ref = ctypes.byref(self.gather_args)
        # Workspace buffers from torch, one per stream (see _ops).
        self.workspace = {}
        self.ws_sizes = {}
        # (pointer, bytes) of the workspace the library holds now: handing
        # it the same one again is skipped.
        self.ws_given = None
        # The last routing call's (stream, sizes, ws_given, buffer), when
        # it was not captured: _ops._enter_routing's shortcut.
        self.ws_memo = None

    def info(self):
        info = ContextInfo()
        info.struct_size = ctypes.sizeof(ContextInfo)
        st = LIB.moes_context_get_info(self.handle, ctypes.byref(info))
        if st != MOES_OK:
            raise make_error(st, last_error(self.handle),
                             "moes_context_get_info")
        return {
            "backend": "cuda" if info.backend == BACKEND_CUDA else "cpu",
            "reason": info.reason.decode("utf-8", "replace"),
            "device_name": info.device_name.decode("utf-8", "replace"),
            "cpu_threads": info.cpu_threads,
            "multiprocessors": info.device_multiprocessors,
            "compute_capability": info.device_compute_capability,
            "memory_bytes": info.device_memory_bytes,
        }

    def fail(self, status, function):
        raise make_error(status, last_error(self.handle), function)


_contexts = {}
_contexts_lock = threading.Lock()


def context(backend, device):
    """The context of (backend, device), opened on first use and kept for
    the life of the process. They are never destroyed: destroying waits on
    the last stream set, which torch may have freed by then."""
    key = (backend, device)
    ctx = _contexts.get(key)
    if ctx is None:
        with _contexts_lock:
            ctx = _contexts.get(key)
            if ctx is None:
                ctx = Context(backend, device)
                _contexts[key] = ctx
    return ctx


def open_contexts():
    return list(_contexts.values())

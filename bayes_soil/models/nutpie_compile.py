"""Shave nutpie's numba compilation: lean C callbacks that call the model's graph by address.

nutpie turns PyTensor's compiled logp + gradient graph into C callbacks (``logp`` and
``expand``) with ``numba.cfunc``. Its callbacks call the graph function directly, so numba links
the graph's code into them and types, lowers and LLVM-optimises it again in every process, even
when PyTensor has just loaded the graph itself from its numba disk cache; and they read the data
arrays (``pm.Data``) through generic record and tuple machinery that costs seconds of numba
typing. Measured on the demo's ``hier_rates`` C (``benchmarks/results.md``): compiling the two
callbacks took 11.6-13.4 s of the fit's 14-19 s of compilation.

The callbacks here are written out for the model at hand (one line per data array, read from
nutpie's own ``user_data`` record, so ``with_data`` still swaps data without recompiling) and call
the graph through the address of its compiled entry point (numba's own calling convention, so an
error inside the graph still reaches the callback's ``except``), the pattern of nutpie's PR #334.
They also copy the gradient element by element: nutpie's ``out[...] = grad`` lowers an error path
that compiles numba's string formatting (about 3 s). Measured after the change: the callbacks
compile in 1.5-2 s, nutpie's whole compilation in 6.7-7.9 s instead of 12.7-15.7 s.

The replacement is installed only if nutpie's builders and its ``user_data`` layout are the ones
this was written against; otherwise nutpie is left as it is. A slow-tier test checks that the
draws are identical to nutpie's own callbacks, with data arrays of several ranks and a
``with_data`` swap.
"""

from __future__ import annotations

import functools
import inspect

import numpy as np

_TRIED = [False]
ORIGINAL: dict = {}  # nutpie's own builders once replaced (also for the equality test)


def by_address(inner, n_dim: int, shared_arrays: list[np.ndarray]):
    """An intrinsic ``call(x, shared_tuple)`` that calls the graph ``inner`` through its address.

    Called through a function pointer, the graph is compiled (or loaded from PyTensor's disk
    cache) once on its own, and the callback that calls it is not re-optimised with it.
    """
    import numba
    from llvmlite import ir
    from numba.core import cgutils, types

    # the callback reads writeable C arrays (numba.carray)
    arg_types = (
        types.Array(types.float64, 1, "C"),
        *(types.Array(numba.from_dtype(a.dtype), a.ndim, "C") for a in shared_arrays),
    )

    def compiled():
        return [k for k in inner.overloads if len(k) == 1 and tuple(k[0]) == arg_types]

    if not compiled():
        # PyTensor's graph function takes *inputs, which numba's compile() does not accept: one
        # call compiles it (or loads it from the disk cache) for these argument types
        try:
            inner(np.zeros(n_dim), *(np.array(a, copy=True) for a in shared_arrays))
        except Exception:  # a failing value at x = 0 still compiles
            pass
    (key,) = compiled()
    star_args = key[0]
    cres = inner.overloads[key]
    # the graph's own entry point, in numba's calling convention: an error inside the graph comes
    # back as an error status and is raised in the callback (which returns nutpie's error code)
    address = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
    return_type = cres.signature.return_type

    @numba.extending.intrinsic
    def call(typingctx, x, shared):
        if (x, *shared) != arg_types:
            raise numba.core.errors.TypingError(
                f"graph compiled for {arg_types}, called with {(x, *shared)}"
            )

        def codegen(context, builder, sig, args):
            x_val, shared_val = args
            values = [x_val] + [builder.extract_value(shared_val, i) for i in range(len(shared))]
            packed = context.make_tuple(builder, star_args, values)
            call_conv = context.call_conv
            fnty = call_conv.get_function_type(return_type, (star_args,))
            callee = builder.inttoptr(ir.Constant(ir.IntType(64), address), fnty.as_pointer())
            status, out = call_conv.call_function(
                builder, callee, return_type, (star_args,), [packed]
            )
            with cgutils.if_unlikely(builder, status.is_error):
                call_conv.return_status_propagate(builder, status)
            return out

        return return_type(x, shared), codegen

    call.graph = inner  # the graph's code must live as long as the callback
    return call


def _word_offsets(record_dtype: np.dtype, keys: list[str]) -> tuple[dict, int] | None:
    """Where each data array's pointer, size and shape sit in ``user_data``, in 8-byte words.

    None if the record is not the flat run of unsigned 64-bit words this reads.
    """
    try:
        shared = record_dtype["shared"]
        if record_dtype.fields["shared"][1] != 0:
            return None
        words = {}
        for key in keys:
            spots = []
            for part in ("data", "size", "shape"):
                field_dtype, offset = shared[part].fields[key][:2]
                base = field_dtype.base
                if base.kind != "u" or base.itemsize != 8 or offset % 8:
                    return None
                spots.append(offset // 8 + shared.fields[part][1] // 8)
            shape_dtype = shared["shape"].fields[key][0]
            ndim = shape_dtype.shape[0] if shape_dtype.shape else 1
            words[key] = (spots[0], spots[2], ndim)
        return words, record_dtype.itemsize // 8
    except (KeyError, TypeError):
        return None


def _callback_source(name: str, head: str, check: str, setup: str, finish: str, keys, words) -> str:
    """Python source of one callback: read each data array from user_data, call the graph."""
    reads = []
    for i, key in enumerate(keys):
        data_at, shape_at, ndim = words[key]
        dims = [f"np.int64(u[{shape_at + d}])" for d in range(ndim)]
        shape = f"({dims[0]},)" if ndim == 1 else f"({', '.join(dims)})"
        reads.append(f"        s{i} = numba.carray(as_pointer(u[{data_at}]), {shape}, DTYPES[{i}])")
    shared = "".join(f"s{i}, " for i in range(len(keys)))
    return "\n".join(
        [
            f"def {name}({head}):",
            check,
            "    try:",
            setup,
            "        u = numba.carray(as_words(user_data_), (N_WORDS,))",
            *reads,
            f"        result = call(x, ({shared}))",
            finish,
            "    except Exception:",
            "        return ERROR",
            "    return 0",
        ]
    )


@functools.cache
def _as_words():
    """Intrinsic: user_data's void pointer read as 64-bit words (nutpie's record is such words)."""
    import numba
    from numba.core import types

    @numba.extending.intrinsic
    def as_words(typingctx, pointer):
        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], context.get_value_type(sig.return_type))

        return types.CPointer(types.uint64)(pointer), codegen

    return as_words


def _callback(name, head, check, setup, finish, graph, n_dim, user_data, keys, shared_data, consts):
    """One callback for this model (compiled by nutpie); None if user_data is unreadable."""
    import numba
    from nutpie.compile_pymc import address_as_void_pointer

    layout = _word_offsets(user_data.dtype, keys)
    if layout is None:
        return None
    words, n_words = layout
    source = _callback_source(name, head, check, setup, finish, keys, words)
    namespace = {
        "np": np,
        "numba": numba,
        "as_pointer": address_as_void_pointer,
        "as_words": _as_words(),
        "N_DIM": n_dim,
        "N_WORDS": n_words,
        "DTYPES": tuple(shared_data[k].dtype for k in keys),
        "call": by_address(graph, n_dim, [shared_data[k] for k in keys]),
        **consts,
    }
    exec(compile(source, f"<bayes_soil nutpie {name}>", "exec"), namespace)
    return namespace[name]


def _logp_builder():
    def make_c_logp_func(n_dim, logp_fn, user_data, shared_keys, shared_data):
        import numba

        fn = _callback(
            "logp_numba",
            "dim, x_, out_, logp_, user_data_",
            check="    if dim != N_DIM:\n        return -1",
            setup="        x = numba.carray(x_, (N_DIM,))\n"
            "        out = numba.carray(out_, (N_DIM,))",
            finish="""\
        logp_val, grad = result
        logp_[0] = logp_val
        finite = np.isfinite(logp_val)
        for i in range(N_DIM):
            out[i] = grad[i]
        for i in range(N_DIM):
            if not np.isfinite(out[i]):
                return 3
        if not finite:
            return 4""",
            graph=logp_fn,
            n_dim=n_dim,
            user_data=user_data,
            keys=shared_keys,
            shared_data=shared_data,
            consts={"ERROR": 1},
        )
        if fn is None:
            return ORIGINAL["logp"](n_dim, logp_fn, user_data, shared_keys, shared_data)
        dbl = numba.types.CPointer(numba.types.double)
        return fn, numba.types.int64(numba.types.uint64, dbl, dbl, dbl, numba.types.voidptr)

    return make_c_logp_func


def _expand_builder():
    def make_c_expand_func(n_dim, n_expanded, expand_fn, user_data, shared_var_keys, shared_data):
        import numba

        fn = _callback(
            "expand_numba",
            "dim, expanded, x_, out_, user_data_",
            check="    if dim != N_DIM or expanded != N_EXPANDED:\n        return -1",
            setup="        x = numba.carray(x_, (N_DIM,))\n"
            "        out = numba.carray(out_, (N_EXPANDED,))",
            finish="""\
        (values,) = result
        for i in range(N_EXPANDED):
            out[i] = values[i]""",
            graph=expand_fn,
            n_dim=n_dim,
            user_data=user_data,
            keys=shared_var_keys,
            shared_data=shared_data,
            consts={"ERROR": -2, "N_EXPANDED": n_expanded},
        )
        if fn is None:
            return ORIGINAL["expand"](
                n_dim, n_expanded, expand_fn, user_data, shared_var_keys, shared_data
            )
        dbl = numba.types.CPointer(numba.types.double)
        u64 = numba.types.uint64
        return fn, numba.types.int64(u64, u64, dbl, dbl, numba.types.voidptr)

    return make_c_expand_func


def _recognised(ncp) -> bool:
    """True if nutpie's builders and user_data are the ones the replacement was written for."""
    try:
        logp_params = list(inspect.signature(ncp._make_c_logp_func).parameters)
        expand_params = list(inspect.signature(ncp._make_c_expand_func).parameters)
        user_data_src = inspect.getsource(ncp.update_user_data)
        compile_src = inspect.getsource(ncp._compile_pymc_model_numba)
    except (AttributeError, OSError, TypeError):
        return False
    return (
        logp_params == ["n_dim", "logp_fn", "user_data", "shared_keys", "shared_data"]
        and expand_params
        == ["n_dim", "n_expanded", "expand_fn", "user_data", "shared_var_keys", "shared_data"]
        and 'user_data["shared"]["data"][key] = val.ctypes.data' in user_data_src
        and "numba.cfunc(c_sig, **kwargs)(logp_numba_raw)" in compile_src
        and hasattr(ncp, "address_as_void_pointer")
    )


def use_fast_callbacks() -> bool:
    """Install the lean callbacks once per process; True if they are in use."""
    if _TRIED[0]:
        return bool(ORIGINAL)
    _TRIED[0] = True
    try:
        import nutpie.compile_pymc as ncp
    except ImportError:
        return False
    if _recognised(ncp):
        ORIGINAL.update(logp=ncp._make_c_logp_func, expand=ncp._make_c_expand_func)
        ncp._make_c_logp_func = _logp_builder()
        ncp._make_c_expand_func = _expand_builder()
    return bool(ORIGINAL)


__all__ = ["use_fast_callbacks"]

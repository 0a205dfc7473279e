"""Shave nutpie's numba compilation: copy the gradient with a loop, not a slice assignment.

nutpie's C callbacks end with ``out[...] = grad`` (and ``out[...] = values`` for the
deterministics). In numba that slice assignment lowers an error path whose message formats the
shapes as strings, and compiling numba's string machinery for it costs about 3 s in every
process (measured on the demo's ``hier_rates`` C: compile 17.4-18.0 s before, 14.4-14.7 s after,
three alternating runs each, load ~0.9; ``benchmarks/results.md``). An element-wise copy computes
the same numbers without that path.

The replacement is installed only if nutpie's callback builders still read as the ones this was
written against (the same names and the slice assignment in their source); otherwise nutpie is
left as it is. Nothing else of nutpie is touched, and the sampled numbers are unchanged (a model
test compares logp and gradient with and without it).
"""

from __future__ import annotations

import inspect

import numpy as np

_TRIED = [False]
ORIGINAL: dict = {}  # nutpie's own builders once replaced (also for the equality test)


def _logp_builder(ncp):
    def make_c_logp_func(n_dim, logp_fn, user_data, shared_keys, shared_data):
        import numba

        extract = ncp.make_extraction_fn(logp_fn, shared_data, shared_keys, user_data.dtype)
        dbl = numba.types.CPointer(numba.types.double)
        c_sig = numba.types.int64(numba.types.uint64, dbl, dbl, dbl, numba.types.voidptr)

        def logp_numba(dim, x_, out_, logp_, user_data_):
            if dim != n_dim:
                return -1
            try:
                x = numba.carray(x_, (n_dim,))
                out = numba.carray(out_, (n_dim,))
                logp = numba.carray(logp_, ())
                logp_val, grad = extract(x, user_data_)
                logp[()] = logp_val
                for i in range(n_dim):
                    out[i] = grad[i]
                if not np.all(np.isfinite(out)):
                    return 3
                if not np.isfinite(logp_val):
                    return 4
            except Exception:
                return 1
            return 0

        return logp_numba, c_sig

    return make_c_logp_func


def _expand_builder(ncp):
    def make_c_expand_func(n_dim, n_expanded, expand_fn, user_data, shared_var_keys, shared_data):
        import numba

        extract = ncp.make_extraction_fn(expand_fn, shared_data, shared_var_keys, user_data.dtype)
        dbl = numba.types.CPointer(numba.types.double)
        c_sig = numba.types.int64(
            numba.types.uint64, numba.types.uint64, dbl, dbl, numba.types.voidptr
        )

        def expand_numba(dim, expanded, x_, out_, user_data_):
            if dim != n_dim:
                return -1
            if expanded != n_expanded:
                return -1
            try:
                x = numba.carray(x_, (n_dim,))
                out = numba.carray(out_, (n_expanded,))
                (values,) = extract(x, user_data_)
                for i in range(n_expanded):
                    out[i] = values[i]
            except Exception:
                return -2
            return 0

        return expand_numba, c_sig

    return make_c_expand_func


def _recognised(ncp) -> bool:
    """True if nutpie's builders are the ones the replacement mirrors."""
    try:
        logp_src = inspect.getsource(ncp._make_c_logp_func)
        expand_src = inspect.getsource(ncp._make_c_expand_func)
        params = list(inspect.signature(ncp.make_extraction_fn).parameters)
    except (AttributeError, OSError, TypeError):
        return False
    return (
        "out[...] = grad" in logp_src
        and "out[...] = values" in expand_src
        and params[:4] == ["inner", "shared_data", "shared_var_keys", "record_dtype"]
    )


def use_fast_callbacks() -> bool:
    """Install the loop-copy callbacks once per process; True if they are in use."""
    if _TRIED[0]:
        return bool(ORIGINAL)
    _TRIED[0] = True
    try:
        import nutpie.compile_pymc as ncp
    except ImportError:
        return False
    if _recognised(ncp):
        ORIGINAL.update(logp=ncp._make_c_logp_func, expand=ncp._make_c_expand_func)
        ncp._make_c_logp_func = _logp_builder(ncp)
        ncp._make_c_expand_func = _expand_builder(ncp)
    return bool(ORIGINAL)


__all__ = ["use_fast_callbacks"]

"""The graph called by address (models/nutpie_compile.py): same numbers, errors still caught.

The callbacks call PyTensor's compiled graph through its entry point's address instead of
linking it in. These tests call a small numba function that way from a numba caller, as the
callbacks do: the values must be those of a direct call, and an exception raised inside the
graph must reach the caller's ``except`` (nutpie's callbacks turn it into an error code), not
crash or return garbage. The draws of a real model are compared in the slow tier.
"""

from __future__ import annotations

import numpy as np
import pytest

numba = pytest.importorskip("numba")
pytestmark = pytest.mark.model


@numba.njit
def graph(*inputs):
    x, data = inputs[0], inputs[1]
    if x[0] < 0:
        raise ValueError("x[0] < 0")
    return (x * data[: x.size]).sum(), x * 2.0


def test_call_by_address_equals_a_direct_call_and_passes_errors_on():
    from bayes_soil.models.nutpie_compile import by_address

    data = np.array([1.5, -2.0, 0.25, 4.0])
    call = by_address(graph, 3, [data])

    @numba.njit
    def caller(x, d):
        try:
            value, grad = call(x, (d,))
            return value, grad[1]
        except Exception:
            return -999.0, -999.0

    x = np.array([0.5, 1.0, 2.0])
    value, grad = graph(x, data)
    assert caller(x, data) == (value, grad[1])
    # another data array of the same type is read at call time (nutpie's with_data)
    other = data[::-1].copy()
    assert caller(x, other) == (graph(x, other)[0], 2.0)
    assert caller(-x, data) == (-999.0, -999.0)


def test_call_by_address_refuses_other_argument_types():
    from bayes_soil.models.nutpie_compile import by_address

    call = by_address(graph, 3, [np.ones(4)])

    @numba.njit
    def caller(x, d):
        return call(x, (d,))[0]

    with pytest.raises(numba.core.errors.TypingError, match="graph compiled for"):
        caller(np.ones(3), np.ones((2, 2)))

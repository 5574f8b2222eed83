"""The window arithmetic, on plain ints, against brute-force enumeration of the index sets.

Each enumeration test loops over all of ``CONFIGS`` (about 2,300 configurations) itself, rather than
being parametrised over them: the same configurations and assertions in one report line each, and a
failure names the configuration."""

import itertools

import pytest

from jaxcnn.ops._padding import (
    conv_output_size,
    dilated_size,
    input_grad_padding,
    normalize_padding,
    same_padding,
    transpose_output_size,
    unreached_rows,
    weight_grad_padding,
)
from jaxcnn.ops._validate import normalize_tuple

CONFIGS = [
    (n, k, s, d, lo, hi)
    for n, k, s, d, lo, hi in itertools.product(range(1, 9), range(1, 4), range(1, 5), range(1, 4), range(3), range(3))
    if dilated_size(k, d) <= n + lo + hi
]


def for_every_config(check):
    """A test that runs ``check(n, k, s, d, lo, hi)`` on every configuration of ``CONFIGS``, naming the one
    that fails."""

    def test():
        for config in CONFIGS:
            try:
                check(*config)
            except AssertionError as err:
                raise AssertionError(f"n, k, s, d, lo, hi = {config}: {err}") from err

    test.__name__, test.__doc__ = check.__name__, check.__doc__
    return test


def test_dilated_size():
    assert [dilated_size(k, 2) for k in (1, 2, 3)] == [1, 3, 5]
    assert dilated_size(3, 1) == 3


@for_every_config
def test_output_size_and_unreached_rows_by_enumeration(n, k, s, d, lo, hi):
    # Window i covers padded rows s*i .. s*i + kd - 1; it exists iff it fits in n + lo + hi rows.
    kd = dilated_size(k, d)
    windows = [i for i in range(n + lo + hi) if s * i + kd <= n + lo + hi]
    assert conv_output_size(n, k, s, d, lo, hi) == len(windows)
    last_reached = s * windows[-1] + kd - 1
    assert unreached_rows(n, k, s, d, lo, hi) == n + lo + hi - 1 - last_reached


@for_every_config
def test_input_grad_padding_routes_every_tap(n, k, s, d, lo, hi):
    # dx[p] collects dz[i] through tap u exactly when s*i + d*u = p + lo. In the upsampled, padded
    # cotangent, dz[i] sits at position before + s*i, and the stride-1 correlation with the flipped
    # kernel reads position p + d*(k-1-u) for tap u. Both descriptions must name the same (i, u).
    o = conv_output_size(n, k, s, d, lo, hi)
    before, after = input_grad_padding(n, k, s, d, lo, hi)
    assert s * (o - 1) + 1 + before + after - dilated_size(k, d) + 1 == n
    for p in range(n):
        forward_pairs = {(i, u) for i in range(o) for u in range(k) if s * i + d * u == p + lo}
        correlation_pairs = {(i, u) for i in range(o) for u in range(k) if before + s * i == p + d * (k - 1 - u)}
        assert forward_pairs == correlation_pairs


@for_every_config
def test_weight_grad_padding_gives_kernel_length(n, k, s, d, lo, hi):
    o = conv_output_size(n, k, s, d, lo, hi)
    wlo, whi = weight_grad_padding(n, k, s, d, lo, hi)
    assert wlo == lo
    padded = n + wlo + whi
    # correlation of the padded input with the s-dilated cotangent (s(o-1)+1 taps) at stride d
    assert (padded - (s * (o - 1) + 1)) // d + 1 == k
    assert (padded - (s * (o - 1) + 1)) % d == 0


@pytest.mark.parametrize("n", range(1, 10))
@pytest.mark.parametrize("k,s,d", [(1, 1, 1), (3, 1, 1), (3, 2, 1), (2, 3, 1), (3, 2, 2), (5, 4, 1)])
def test_same_padding_keeps_ceil_n_over_s(n, k, s, d):
    lo, hi = same_padding(n, k, s, d)
    assert 0 <= hi - lo <= 1
    assert conv_output_size(n, k, s, d, lo, hi) == -(-n // s)


@for_every_config
def test_transpose_output_size_inverts_conv_output_size(n, k, s, d, lo, hi):
    # A transposed conv maps o back to n when output_padding equals the conv's unreached rows.
    o = conv_output_size(n, k, s, d, lo, hi)
    r = unreached_rows(n, k, s, d, lo, hi)
    assert transpose_output_size(o, k, s, d, lo, hi, r) == n


def test_normalize_tuple():
    assert normalize_tuple(2, 3, "stride") == (2, 2, 2)
    assert normalize_tuple((1, 2), 2, "stride") == (1, 2)
    assert normalize_tuple((0, 1), 2, "output_padding", minimum=0) == (0, 1)
    with pytest.raises(ValueError, match=r"stride must be a positive int or tuple of 2 ints, got \(0, 1\)"):
        normalize_tuple((0, 1), 2, "stride")
    with pytest.raises(ValueError, match=r"dilation must be a positive int or tuple of 2 ints, got \(1, 2, 3\)"):
        normalize_tuple((1, 2, 3), 2, "dilation")
    with pytest.raises(TypeError, match=r"stride must be .* got 1.5"):
        normalize_tuple(1.5, 2, "stride")
    with pytest.raises(TypeError, match=r"stride must be .* got True"):
        normalize_tuple(True, 2, "stride")


def test_normalize_padding():
    args = ((5, 6), (3, 2), (2, 1), (1, 1))
    assert normalize_padding("VALID", *args) == ((0, 0), (0, 0))
    assert normalize_padding("same", *args) == (same_padding(5, 3, 2, 1), same_padding(6, 2, 1, 1))
    assert normalize_padding(1, *args) == ((1, 1), (1, 1))
    assert normalize_padding((1, (0, 2)), *args) == ((1, 1), (0, 2))
    with pytest.raises(ValueError, match=r"padding must be one of \['VALID', 'SAME', .*got 'FULL'"):
        normalize_padding("FULL", *args)
    with pytest.raises(ValueError, match=r"padding must be .*non-negative.*got -1"):
        normalize_padding(-1, *args)
    with pytest.raises(ValueError, match=r"got \(1, 2, 3\)"):
        normalize_padding((1, 2, 3), *args)
    with pytest.raises(ValueError, match=r"padding must be one of \[an int.*got 'SAME'"):
        normalize_padding("SAME", *args, allow_strings=False)

import pytest, torch
from miniai.matmul import (bench, largest_in, matmul_broadcast, matmul_einsum, matmul_elementwise, matmul_lists, matmul_loops)

TENSOR_MATMULS = [matmul_loops, matmul_elementwise, matmul_broadcast, matmul_einsum]


@pytest.mark.parametrize('shape', [(1, 1, 1), (3, 4, 5), (7, 2, 1), (5, 16, 9)])
def test_all_variants_agree_with_torch(shape):
    n, k, m = shape
    g = torch.Generator().manual_seed(sum(shape))
    a, b = torch.randn(n, k, generator=g), torch.randn(k, m, generator=g)
    ref = a @ b
    for f in TENSOR_MATMULS: torch.testing.assert_close(f(a, b), ref, msg=f.__name__)
    torch.testing.assert_close(torch.tensor(matmul_lists(a.tolist(), b.tolist())), ref)


@pytest.mark.parametrize('f', TENSOR_MATMULS)
def test_shape_errors_are_clear(f):
    with pytest.raises(ValueError, match=r"a is \(3, 4\), b is \(5, 2\); a's columns \(4\) must equal b's rows \(5\)"):
        f(torch.ones(3, 4), torch.ones(5, 2))
    with pytest.raises(ValueError, match='expected two 2-D tensors'): f(torch.ones(3), torch.ones(3, 2))


def test_lists_shape_error():
    with pytest.raises(ValueError, match="a's columns must equal b's rows"): matmul_lists([[1., 2.]], [[1.], [2.], [3.]])


def test_bench_and_largest_in():
    assert 0 <= bench(sum, range(1000), repeat=2) < 1
    n, t = largest_in(matmul_einsum, lambda n: (torch.randn(n, n), torch.randn(n, n)), budget=0.05, max_n=64)
    assert 8 <= n <= 64 and t <= 0.05


# --- dtypes, ragged and empty inputs, bad settings -------------------------------------------------------------

DTYPES = [torch.float64, torch.float32, torch.int64, torch.int32, torch.int8, torch.complex64]

@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('f', TENSOR_MATMULS)
def test_tensor_variants_keep_the_dtype_torch_gives(f, dtype):
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randint(-5, 6, s, generator=g).to(dtype) for s in ((4, 3), (3, 5)))
    if dtype == torch.float64: a, b = a + torch.randn(4, 3, dtype=dtype, generator=g), b / 7   # not whole numbers
    ref = a @ b
    out = f(a, b)
    assert out.dtype == ref.dtype == dtype and out.shape == ref.shape
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize('f', TENSOR_MATMULS)
def test_mixed_dtypes_promote(f):
    a, b = torch.tensor([[1, 2]]), torch.tensor([[0.5], [0.25]], dtype=torch.float64)
    out = f(a, b)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, a.double() @ b)


@pytest.mark.parametrize('shape', [(0, 3, 2), (2, 0, 3), (2, 3, 0), (0, 0, 0)])
@pytest.mark.parametrize('f', TENSOR_MATMULS)
def test_empty_sizes_match_torch(f, shape):
    n, k, m = shape
    a, b = torch.ones(n, k, dtype=torch.float64), torch.ones(k, m, dtype=torch.float64)
    out, ref = f(a, b), a @ b
    assert out.shape == ref.shape and out.dtype == ref.dtype and torch.equal(out, ref)


@pytest.mark.parametrize('f', TENSOR_MATMULS)
def test_tensor_variants_reject_non_tensors_and_bools(f):
    with pytest.raises(TypeError, match=rf'{f.__name__}: a must be a tensor, got list'): f([[1.]], torch.ones(1, 1))
    with pytest.raises(TypeError, match=rf'{f.__name__}: b must be a tensor, got NoneType'): f(torch.ones(1, 1), None)
    with pytest.raises(TypeError, match=r'a is a bool tensor.*\.float\(\)'): f(torch.ones(2, 2, dtype=torch.bool), torch.ones(2, 2))
    for a, b in ((torch.ones(2, 2, 2), torch.ones(2, 2)), (torch.ones(2, 2), torch.ones(2)), (torch.tensor(1.), torch.ones(1, 1))):
        with pytest.raises(ValueError, match=rf'{f.__name__}: expected two 2-D tensors'): f(a, b)


def test_lists_keep_number_types_like_torch():
    ai, bi = [[1, 2, 3], [4, 5, 6]], [[1, -1], [0, 2], [3, 1]]
    out = matmul_lists(ai, bi)
    assert out == (torch.tensor(ai) @ torch.tensor(bi)).tolist() and all(type(v) is int for r in out for v in r)
    af = [[1.5, 2], [0, 1]]
    out = matmul_lists(af, [[2], [1]])
    assert out == [[5.0], [1.0]] and all(type(v) is float for r in out for v in r)
    t = torch.randn(3, 4, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    torch.testing.assert_close(torch.tensor(matmul_lists(t[0].tolist(), t[1].tolist()), dtype=torch.float64), t[0] @ t[1])
    assert matmul_lists(((1, 2),), ((3,), (4,))) == [[11]]               # tuples are rows too
    assert type(matmul_lists([[1, 2]], [[1], [1j]])[0][0]) is complex
    from fractions import Fraction
    assert matmul_lists([[Fraction(1, 3)]], [[3]]) == [[1]]


@pytest.mark.parametrize('a,b,err,msg', [
    ([[1, 2], [3]], [[1], [2]], ValueError, r'a is ragged: row 0 has 2 numbers but row 1 has 1'),
    ([[1, 2], [3, 4]], [[1, 2], [3]], ValueError, r'b is ragged: row 0 has 2 numbers but row 1 has 1'),
    ([[1], [2, 3]], [[1], [2]], ValueError, r'a is ragged'),                # first row short: not missed
    ([[1, 2], [3, 4, 5]], [[1], [2]], ValueError, r'a is ragged'),          # a longer later row: not ignored
    ([], [[1]], ValueError, r'a is empty'),
    ([[]], [[1]], ValueError, r'a is empty'),
    ([[1]], [], ValueError, r'b is empty'),
    ([[1]], [[]], ValueError, r'b is empty'),
    ([1, 2], [[1], [2]], TypeError, r'a must be a list of rows'),
    ([[1, 2]], [1, 2], TypeError, r'b must be a list of rows'),
    ('ab', [[1]], TypeError, r'a must be a list of rows'),
    (None, [[1]], TypeError, r'a must be a list of rows, each a list of numbers; got NoneType'),
    (torch.ones(1, 1), [[1]], TypeError, r'a must be a list of rows.*got Tensor \(for tensors use matmul_loops'),
    ([[1, 'x']], [[1], [2]], TypeError, r"a\[0\]\[1\] is 'x'; every entry must be a number"),
    ([[1, 2]], [[1], [None]], TypeError, r'b\[1\]\[0\] is None'),
    ([[True, 2]], [[1], [2]], TypeError, r'a\[0\]\[0\] is True'),
    ([[1, 2]], [[1], [2], [3]], ValueError, r"a has rows of length 2 but b has 3 rows; a's columns must equal b's rows"),
])
def test_lists_reject_what_is_not_a_matrix(a, b, err, msg):
    with pytest.raises(err, match=f'matmul_lists: {msg}'): matmul_lists(a, b)


def test_bench_and_largest_in_check_settings():
    mk = lambda n: (torch.ones(n, n), torch.ones(n, n))
    for bad, err in ((0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(err, match='bench: repeat must be an integer >= 1'): bench(sum, [1], repeat=bad)
    with pytest.raises(TypeError, match='bench: f must be a function'): bench(3)
    cases = [(dict(budget=0), ValueError, 'budget must be a number > 0'), (dict(budget=-1), ValueError, 'budget'),
             (dict(budget=float('nan')), ValueError, 'budget must be a finite'), (dict(budget='1'), TypeError, 'budget'),
             (dict(grow=1), ValueError, 'grow must be a number > 1'), (dict(grow=0.5), ValueError, 'grow'),
             (dict(start=0), ValueError, 'start must be an integer >= 1'), (dict(start=2.0), TypeError, 'start'),
             (dict(max_n=4), ValueError, 'max_n must be an integer >= 8'), (dict(refine=-1), ValueError, 'refine'),
             (dict(refine=None), TypeError, 'refine')]
    for kw, err, msg in cases:
        with pytest.raises(err, match=f'largest_in: {msg}'): largest_in(matmul_einsum, mk, **kw)
    with pytest.raises(TypeError, match='largest_in: make must be callable'): largest_in(matmul_einsum, 8)

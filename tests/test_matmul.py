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

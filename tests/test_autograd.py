"Our autograd engine (`miniai.autograd.Value`) against torch autograd: values and gradients on random shapes and expressions."
import random
import pytest, torch
from torch.testing import assert_close
from miniai.autograd import Value, unbroadcast, broadcast_shape

F64 = torch.float64
SEEDS = range(5)

def rand(shape, gen, domain='any'):
    "Random float64 tensor; `pos` keeps it > 0.5 (for log, sqrt), `nonzero` keeps |x| > 0.5 (for division)."
    t = torch.randn(shape, generator=gen, dtype=F64)
    if domain == 'pos': return t.abs() + 0.5
    if domain == 'nonzero': return torch.where(t < 0, t - 0.5, t + 0.5)
    return t

def check(f, tensors):
    "Compute `f` with our engine and with torch autograd on the same tensors; compare output and every input's gradient."
    vs = [Value(t) for t in tensors]
    ts = [t.clone().requires_grad_() for t in tensors]
    out, ref = f(*vs), f(*ts)
    assert isinstance(out, Value), f"expected a Value, got {type(out).__name__}"
    assert out.shape == ref.shape, f"output shape {tuple(out.shape)}, torch {tuple(ref.shape)}"
    assert_close(out.data, ref.detach())
    g = None if ref.ndim == 0 else torch.randn(ref.shape, dtype=F64)   # non-scalar outputs: a random upstream gradient
    out.backward(g); ref.backward(g)
    for i, (v, t) in enumerate(zip(vs, ts)):
        assert v.grad.shape == v.shape, f"input {i}: grad shape {tuple(v.grad.shape)} != value shape {tuple(v.shape)}"
        assert_close(v.grad, t.grad, msg=lambda m: f"input {i} of shape {tuple(t.shape)}: {m}")

# name: (expression, shapes from random sizes (n, m, k), domain of each input)
CASES = {
    'add (n,1)+(1,m)':        (lambda a, b: a + b,              lambda n, m, k: [(n, 1), (1, m)], 'aa'),
    'mul (n,m)*(m,)':         (lambda a, b: a * b,              lambda n, m, k: [(n, m), (m,)], 'aa'),
    'scalar operand':         (lambda a, s: a * s + s,          lambda n, m, k: [(n, m), ()], 'aa'),
    'scalars only':           (lambda a, b: (a * b - a) / b,    lambda n, m, k: [(), ()], 'an'),
    'sub':                    (lambda a, b: a - b,              lambda n, m, k: [(n, m), (n, m)], 'aa'),
    'sub (n,1)-(m,)':         (lambda a, b: a - b,              lambda n, m, k: [(n, 1), (m,)], 'aa'),
    'div (n,m)/(n,1)':        (lambda a, b: a / b,              lambda n, m, k: [(n, m), (n, 1)], 'an'),
    'div (m,)/(k,n,m)':       (lambda a, b: a / b,              lambda n, m, k: [(m,), (k, n, m)], 'an'),
    'numbers on both sides':  (lambda a: 2*a - a/3 + 1 - (3 - a)*0.5 + 2/a, lambda n, m, k: [(n, m)], 'n'),
    'reciprocal 1/x':         (lambda x: 1 / x,                 lambda n, m, k: [(n, m)], 'n'),
    'x**2':                   (lambda x: x**2,                  lambda n, m, k: [(n, m)], 'a'),
    'x**3 - x**-2':           (lambda x: x**3 - x**-2,          lambda n, m, k: [(n, m)], 'n'),
    'sqrt x**0.5':            (lambda x: x**0.5,                lambda n, m, k: [(n, m)], 'p'),
    'neg':                    (lambda a, b: -a * b,             lambda n, m, k: [(n, m), (m,)], 'aa'),
    'matmul':                 (lambda a, b: a @ b,              lambda n, m, k: [(n, k), (k, m)], 'aa'),
    'matmul batched':         (lambda a, b: a @ b,              lambda n, m, k: [(2, n, k), (k, m)], 'aa'),
    'matmul batch broadcast': (lambda a, b: a @ b,              lambda n, m, k: [(3, 1, n, k), (2, k, m)], 'aa'),
    '((a@b + c).relu()*d).sum()': (lambda a, b, c, d: ((a @ b + c).relu() * d).sum(),
                                                                lambda n, m, k: [(n, k), (k, m), (m,), (n, m)], 'aaaa'),
    'log softmax mean':       (lambda a: (a.exp() / a.exp().sum(1, keepdim=True)).log().mean(), lambda n, m, k: [(n, m)], 'a'),
    'exp and log':            (lambda a, b: (a.exp() + b).log(), lambda n, m, k: [(n, m), (n, 1)], 'ap'),
    'sum and mean over dims': (lambda a, b: a.sum(0) * b + a.mean(1, keepdim=True) - a.mean(-1, keepdim=True) * a.sum(),
                                                                lambda n, m, k: [(n, m), (m,)], 'aa'),
    '3-d sum/mean':           (lambda a: a.sum(-2) + a.mean(0).sum(0) * a.sum(2, keepdim=True).mean(1),
                                                                lambda n, m, k: [(k, n, m)], 'a'),
    'transpose':              (lambda a, b, s: a.T @ b + b.T.sum(1) * s,  lambda n, m, k: [(k, n), (k, m), ()], 'aaa'),
    'tensor constant':        (lambda a: (torch.linspace(-1, 1, a.shape[-1], dtype=F64) - a) @ a.T,
                                                                lambda n, m, k: [(n, m)], 'a'),
    'same value many times':  (lambda a: a * a + a @ a.T + a.relu() * a, lambda n, m, k: [(n, n)], 'a'),
    'mlp mse loss':           (lambda x, w1, b1, w2, b2, y: (((x @ w1 + b1).relu() @ w2 + b2 - y)**2).mean(),
                                                                lambda n, m, k: [(n, 7), (7, m), (m,), (m, k), (k,), (n, k)], 'aaaaaa'),
}
DOMAIN = dict(a='any', p='pos', n='nonzero')

@pytest.mark.parametrize('seed', SEEDS)
@pytest.mark.parametrize('name', CASES)
def test_matches_torch(name, seed):
    f, shapes, domains = CASES[name]
    rng = random.Random(seed)
    n, m, k = (rng.randint(1, 5) for _ in range(3))   # sizes include 1, so broadcasting of real length-1 dims is exercised too
    gen = torch.Generator().manual_seed(seed)
    check(f, [rand(s, gen, DOMAIN[d]) for s, d in zip(shapes(n, m, k), domains)])

def test_node_used_twice_accumulates():
    x = Value(torch.tensor([1., -2., 3.]))
    (x * x).sum().backward()
    assert_close(x.grad, torch.tensor([2., -4., 6.]))     # d/dx x*x = 2x, not x
    x = Value(torch.tensor([1., -2., 3.]))
    (x + x).sum().backward()
    assert_close(x.grad, torch.full((3,), 2.))             # d/dx (x + x) = 2, not 1
    x = Value(torch.tensor([1., -2., 3.]))                 # a diamond: y feeds z twice
    y = x * 2
    (y * y + y).sum().backward()
    assert_close(x.grad, (2 * (2 * x.data) + 1) * 2)       # dz/dy = 2y + 1, dy/dx = 2

def test_backward_twice_accumulates_like_torch():
    gen = torch.Generator().manual_seed(0)
    a, b = rand((4, 3), gen), rand((3, 2), gen)
    va, vb = Value(a), Value(b)
    ta, tb = a.clone().requires_grad_(), b.clone().requires_grad_()
    out, ref = ((va @ vb).relu() * va.sum(1, keepdim=True)).sum(), ((ta @ tb).relu() * ta.sum(1, keepdim=True)).sum()
    for _ in range(2):                                     # leaf grads add up over calls, intermediates start afresh
        out.backward(); ref.backward(retain_graph=True)
    assert_close(va.grad, ta.grad); assert_close(vb.grad, tb.grad)

def test_sgd_steps_match_torch():
    "A few SGD steps on a small MLP give the same parameters with our engine as with torch autograd."
    gen = torch.Generator().manual_seed(1)
    x, y = rand((16, 5), gen), rand((16, 3), gen)
    init = [rand((5, 8), gen) * 0.5, torch.zeros(8, dtype=F64), rand((8, 3), gen) * 0.5, torch.zeros(3, dtype=F64)]
    ours, theirs = [Value(p) for p in init], [p.clone().requires_grad_() for p in init]
    f = lambda x, w1, b1, w2, b2: (((x @ w1 + b1).relu() @ w2 + b2 - y)**2).mean()
    for _ in range(5):
        f(Value(x), *ours).backward(); f(x, *theirs).backward()
        with torch.no_grad():
            for p, q in zip(ours, theirs):
                p.data -= 0.1 * p.grad; p.grad.zero_()
                q -= 0.1 * q.grad; q.grad.zero_()
    for p, q in zip(ours, theirs): assert_close(p.data, q.detach())

@pytest.mark.parametrize('shape', [(3, 4), (3, 1), (1, 4), (4,), (1,), (), (2, 1, 4)])
def test_unbroadcast_matches_torch(shape):
    full = broadcast_shape('+', shape, (2, 3, 4))
    g = torch.randn(full, dtype=F64)
    t = torch.randn(shape, dtype=F64, requires_grad=True)
    (t.expand(full) * g).sum().backward()                  # torch's gradient of a broadcast operand
    res = unbroadcast(g, shape)
    assert res.shape == t.shape
    assert_close(res, t.grad)

def test_shape_errors():
    with pytest.raises(ValueError, match=r"@: shapes \(3, 4\) @ \(5, 2\) do not match.*\(4\).*\(5\).*\(3, 4\) @ \(4, 2\)"):
        Value(torch.ones(3, 4)) @ Value(torch.ones(5, 2))
    with pytest.raises(ValueError, match=r"@ \(batch dimensions\): shapes \(2,\) and \(3,\) do not broadcast"):
        Value(torch.ones(2, 3, 4)) @ Value(torch.ones(3, 4, 2))
    with pytest.raises(ValueError, match=r"at least 2 dimensions.*x\[None\]"):
        Value(torch.ones(3, 4)) @ Value(torch.ones(4))
    for op in ('+', '*'):
        with pytest.raises(ValueError, match=rf"\{op}: shapes \(3, 4\) and \(5,\) do not broadcast.*equal or one of them 1"):
            getattr(Value(torch.ones(3, 4)), {'+': '__add__', '*': '__mul__'}[op])(torch.ones(5))
    with pytest.raises(ValueError, match=r"shapes \(3, 4\) and \(3,\) do not broadcast"):
        Value(torch.ones(3, 4)) - Value(torch.ones(3))
    with pytest.raises(ValueError, match=r"\*: shapes \(2,\) and \(2, 3\) do not broadcast"):
        torch.ones(2) / Value(torch.ones(2, 3))             # a tensor on the left still reaches our check
    with pytest.raises(ValueError, match=r"backward: this Value has shape \(3, 4\); call it on a scalar"):
        (Value(torch.ones(3, 4)) * 2).backward()
    with pytest.raises(ValueError, match=r"gradient has shape \(4, 3\) but the Value has shape \(3, 4\)"):
        (Value(torch.ones(3, 4)) * 2).backward(torch.ones(4, 3))
    with pytest.raises(ValueError, match=r"\.T: shape \(2, 3, 4\) has 3 dimensions"):
        Value(torch.ones(2, 3, 4)).T
    with pytest.raises(TypeError, match="exponent must be a number"):
        Value(torch.ones(2)) ** Value(torch.ones(2))

def test_engine_does_not_use_torch_autograd():
    t = torch.randn(3, 4, requires_grad=True)              # even from a tensor that asks torch for gradients
    a, b = Value(t), Value(torch.randn(4, 2))
    out = ((a @ b).relu().exp() + 1).log().mean()
    out.backward()
    assert all(not v.data.requires_grad and v.data.grad_fn is None for v in out.topo())
    assert t.grad is None                                  # torch's side untouched
    assert a.grad.abs().sum() > 0                          # ...but our gradient is there

def test_inputs_and_topo():
    v = Value([1, 2, 3])                                   # ints and lists become float tensors
    assert v.data.dtype == torch.float32 and v.shape == (3,)
    assert Value(torch.ones(2, dtype=F64)).data.dtype == F64
    w = Value(torch.arange(3.))                            # .T leaves a vector as it is (as torch does), gradient included
    (w.T * torch.arange(3.)).sum().backward()
    assert_close(w.grad, torch.arange(3.))
    a, b = Value(2.), Value(3.)
    c = a * b; d = c + a
    order = d.topo()
    assert order[-1] is d and len(order) == 4 and set(map(id, order)) == {id(a), id(b), id(c), id(d)}
    assert order.index(c) > order.index(a) and order.index(c) > order.index(b) and order.index(d) > order.index(c)


# --- deep graphs, powers at 0, reductions over several dimensions, dtypes, bad input -----------------------------

@pytest.mark.parametrize('steps', [1500, 5000, 20000])
def test_long_chain_no_recursion_error(steps):
    "A chain as deep as `steps` (two operations a step): topo and backward need no recursion; the gradient matches torch."
    x, t = Value(torch.tensor([0.5, -1.], dtype=F64)), torch.tensor([0.5, -1.], dtype=F64, requires_grad=True)
    y, r = x, t
    for _ in range(steps): y, r = y * 1.00001 + 0.001, r * 1.00001 + 0.001
    assert len(y.topo()) == 2*steps + 1 + 2*steps         # every result, x, and the two constants of every step
    y.sum().backward(); r.sum().backward()
    assert_close(y.data, r.detach()); assert_close(x.grad, t.grad)

def test_wide_and_deep_graph_matches_torch():
    "Many paths between the same nodes (each step uses the previous two): grads add up over every path."
    gen = torch.Generator().manual_seed(0)
    a = rand((3,), gen)
    def f(x):
        p, q = x, x * 0.5
        for _ in range(1500): p, q = q, (p * 0.3 + q * 0.7) * 1.0
        return (p * q).sum()
    check(f, [a])

def test_topo_order_same_as_recursive_definition():
    "The iterative walk gives exactly the order of the textbook recursive one."
    def recursive(root):
        order, seen = [], set()
        def visit(v):
            if v in seen: return
            seen.add(v)
            for p in v._parents: visit(p)
            order.append(v)
        visit(root)
        return order
    gen = torch.Generator().manual_seed(3)
    a, b, c = (Value(rand((2, 2), gen)) for _ in range(3))
    out = ((a @ b + c).relu() * a - b / c).exp().log().sum(0) * a.mean()
    assert recursive(out) == out.topo()

POWERS = [0, 0., 1, 2, 3, -1, -2, 0.5, 1.5, 2.5, -0.5]

@pytest.mark.parametrize('n', POWERS)
def test_powers_at_zero_and_negative_match_torch(n):
    "x**n at x = 0 (and at negative x where defined), values and gradients equal to torch's, inf and NaN included."
    x = torch.tensor([0., -0., 1.5, -2., 3.], dtype=F64)
    if not float(n).is_integer(): x = x.abs()               # a fractional power of a negative number is NaN anyway
    check(lambda v: v**n, [x])
    v = Value(x); (v**n).sum().backward()
    if n == 0: assert torch.equal(v.grad, torch.zeros_like(x))   # flat everywhere, at 0 too (not NaN)

def test_power_exponent_types():
    import numpy as np
    x = Value(torch.tensor([2.]))
    for n in (np.float32(2), np.int64(2), 2.0):
        (x**n).sum().backward()
    assert_close(x.grad, torch.tensor([12.]))
    for bad in (True, '2', None, torch.tensor(2.), Value(2.)):
        with pytest.raises(TypeError, match='exponent must be a number'): x**bad

DIMS = [None, 0, 1, -1, -2, (0, 1), (1, 0), (-1, 0), (0, 2), (2, -3), [1, 2], (0, 1, 2), (), 2]

@pytest.mark.parametrize('keepdim', [False, True])
@pytest.mark.parametrize('dim', DIMS, ids=str)
@pytest.mark.parametrize('op', ['sum', 'mean'])
def test_reductions_over_any_dims_match_torch(op, dim, keepdim):
    gen = torch.Generator().manual_seed(0)
    kw = {} if dim is None and not keepdim else dict(dim=dim, keepdim=keepdim)
    check(lambda a: getattr(a, op)(**kw) * 2, [rand((2, 3, 4), gen)])

@pytest.mark.parametrize('op', ['sum', 'mean'])
def test_reductions_of_scalars_and_empty_tensors_match_torch(op):
    gen = torch.Generator().manual_seed(0)
    for dim in (None, 0, -1, (0,), ()):
        kw = {} if dim is None else dict(dim=dim)
        check(lambda a: getattr(a, op)(**kw), [rand((), gen)])
        check(lambda a: getattr(a, op)(**kw, keepdim=True) if dim is not None else getattr(a, op)(), [rand((), gen)])
    for shape, dim in (((0, 3), 0), ((0, 3), 1), ((3, 0), (0, 1)), ((0,), None)):
        kw = {} if dim is None else dict(dim=dim)
        vs, ts = Value(torch.zeros(shape, dtype=F64)), torch.zeros(shape, dtype=F64, requires_grad=True)
        out, ref = getattr(vs, op)(**kw), getattr(ts, op)(**kw)
        assert out.shape == ref.shape
        assert_close(out.data, ref.detach(), equal_nan=True)
        out.backward(torch.ones(ref.shape, dtype=F64)); ref.backward(torch.ones(ref.shape, dtype=F64))
        assert vs.grad.shape == ts.grad.shape and torch.equal(vs.grad, ts.grad)

@pytest.mark.parametrize('op', ['sum', 'mean'])
def test_reduction_errors(op):
    x = Value(torch.ones(2, 3))
    f = getattr(x, op)
    for bad in (2, -3, (0, 2), 5):
        with pytest.raises(ValueError, match=rf'{op}: dim .* is out of range for a tensor with 2 dimensions \(use -2 to 1\)'):
            f(bad)
    for bad in ((0, 0), (1, -1), [0, -2]):
        with pytest.raises(ValueError, match=rf'{op}: dim .* names the same dimension twice'): f(bad)
    for bad in (1.0, True, '0', (0, 1.0), (None,)):
        with pytest.raises(TypeError, match=rf'{op}: dim must be an int or a tuple of ints'): f(bad)
    with pytest.raises(TypeError, match=rf'{op}: keepdim must be True or False'): f(0, keepdim=1)
    with pytest.raises(ValueError, match='same dimension twice'): getattr(Value(2.), op)((0, -1))

def test_broadcasting_in_backward_many_shapes():
    "Every broadcasting pattern in +, *, / and -, through several operations, against torch."
    shapes = [((2, 3, 4), (4,)), ((2, 3, 4), (3, 1)), ((2, 1, 4), (3, 1)), ((1,), (2, 3)), ((), (2, 3)),
              ((5, 1, 1), (1, 2, 1)), ((1, 1), (1,)), ((2, 1, 3, 1), (4, 1, 5))]
    gen = torch.Generator().manual_seed(4)
    for sa, sb in shapes:
        a, b = rand(sa, gen), rand(sb, gen, 'nonzero')
        check(lambda a, b: ((a + b) * a - b / (a * 0 + 2) + a / b).sum(), [a, b])

def test_dtypes_follow_torch():
    "float64 stays float64; a number keeps our dtype; a float64 tensor widens a float32 Value, as in torch."
    a32, a64 = torch.randn(3, dtype=torch.float32), torch.randn(3, dtype=F64)
    for x, o in ((a32, 2), (a32, a64), (a64, a32), (a64, 2.5), (a32, torch.tensor([1, 2, 3]))):
        v, t = Value(x), x.clone().requires_grad_()
        out, ref = v * o + o, t * o + o
        assert out.data.dtype == ref.dtype, (x.dtype, o)
        out.sum().backward(); ref.sum().backward()
        assert v.grad.dtype == t.grad.dtype == x.dtype
        assert_close(v.grad, t.grad)

def test_bad_data_and_gradients():
    for bad in ([[1, 2], [3]], 'abc', None, {'a': 1}, object()):
        with pytest.raises(TypeError, match='Value: expected a tensor, a number or a nested list'): Value(bad)
    with pytest.raises(TypeError, match='complex numbers are not supported'): Value(torch.ones(2, dtype=torch.complex64))
    with pytest.raises(TypeError, match='Value: expected a tensor'): Value(torch.ones(2)) + 'x'
    v = Value(torch.ones(2, 2)) * 3
    v.backward([[1., 0.], [0., 1.]])                        # a nested list is a fine gradient
    with pytest.raises(ValueError, match=r'gradient has shape \(3,\) but the Value has shape \(2, 2\)'): v.backward([1., 2., 3.])
    with pytest.raises(TypeError, match='Value: expected a tensor'): v.backward('ones')

def test_unbroadcast_rejects_shapes_that_cannot_have_broadcast():
    for g, shape in (((3, 4), (5,)), ((3, 4), (3,)), ((4,), (2, 4)), ((3, 4), (3, 4, 1))):
        with pytest.raises(ValueError, match=r'unbroadcast: a gradient of shape .* cannot come from broadcasting'):
            unbroadcast(torch.ones(g), shape)
    with pytest.raises(TypeError, match='unbroadcast: a shape must be a tuple of ints'): unbroadcast(torch.ones(2), torch.ones(1))
    with pytest.raises(TypeError, match='unbroadcast: g must be a tensor'): unbroadcast([1., 2.], (2,))
    with pytest.raises(TypeError, match=r'\+: a shape must be a tuple of ints'): broadcast_shape('+', (2,), 3)

def test_dims_given_as_numpy_or_tensor_ints():
    import numpy as np
    gen = torch.Generator().manual_seed(0)
    for dim, plain in ((np.int64(1), 1), ((np.int32(0), -1), (0, -1)), (torch.tensor(1), 1)):
        a = rand((2, 3), gen)
        v = Value(a); out = v.sum(dim) + v.mean(dim)
        t = a.clone().requires_grad_(); ref = t.sum(plain) + t.mean(plain)
        assert_close(out.data, ref.detach())
        out.sum().backward(); ref.sum().backward()
        assert_close(v.grad, t.grad)

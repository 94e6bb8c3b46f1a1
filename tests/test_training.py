"miniai.training against torch: the loss functions (values and gradients), the data pipeline, the optimizer and `fit`'s metrics."
import pytest, torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close
from miniai.training import (logsumexp, log_softmax, nll, cross_entropy, accuracy, Optimizer, Dataset, Sampler,
                             BatchSampler, collate, DataLoader, fit, get_dls)

SCALES = [1., 10., 1000., 1e5]  # 1000 and above overflow a naive exp in float32 (and float64 from ~710)

def naive_log_softmax(x): return (x.exp() / x.exp().sum(-1, keepdim=True)).log()

@pytest.mark.parametrize('scale', SCALES)
@pytest.mark.parametrize('shape', [(7, 10), (1, 3), (2, 5, 4), (6,)])
def test_logsumexp_log_softmax_match_torch(shape, scale):
    g = torch.Generator().manual_seed(hash((shape, scale)) % 2**31)
    x = torch.randn(shape, generator=g) * scale
    assert_close(logsumexp(x), torch.logsumexp(x, -1))
    assert_close(log_softmax(x), F.log_softmax(x, -1))
    assert log_softmax(x).isfinite().all()

def test_naive_version_really_overflows():
    "The large-logit cases above are a real test: the obvious formula fails on them."
    x = torch.tensor([[1000., 0., -3.]])
    assert not naive_log_softmax(x).isfinite().all()
    assert_close(log_softmax(x), torch.tensor([[0., -1000., -1003.]]))
    assert_close(logsumexp(torch.tensor([1000., 1000.])), torch.tensor(1000. + torch.log(torch.tensor(2.)).item()))

def test_logsumexp_infinite_rows_match_torch():
    x = torch.tensor([[-float('inf')]*3, [float('inf'), 0., 1.], [0., -float('inf'), 1.]])
    assert_close(logsumexp(x), torch.logsumexp(x, -1))

def test_logsumexp_float64():
    x = torch.randn(4, 9, dtype=torch.float64) * 800
    assert_close(logsumexp(x), torch.logsumexp(x, -1))

@pytest.mark.parametrize('scale', SCALES)
def test_cross_entropy_and_nll_match_torch_values_and_grads(scale):
    g = torch.Generator().manual_seed(int(scale))
    x = torch.randn(32, 10, generator=g) * scale
    y = torch.randint(0, 10, (32,), generator=g)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, theirs = cross_entropy(a, y), F.cross_entropy(b, y)
    assert_close(ours, theirs)
    ours.backward(); theirs.backward()
    assert_close(a.grad, b.grad)
    lsm = F.log_softmax(x, -1)
    assert_close(nll(lsm, y), F.nll_loss(lsm, y))

def test_nll_picks_target_entries():
    lp = torch.tensor([[-1., -2., -3.], [-4., -5., -6.]])
    assert_close(nll(lp, torch.tensor([2, 0])), torch.tensor((3. + 4.) / 2))

def test_accuracy_hand_made():
    out = torch.tensor([[0.1, 0.9, 0.0],    # predicts 1
                        [2.0, 1.0, 0.5],    # predicts 0
                        [0.0, 0.0, 3.0],    # predicts 2
                        [5.0, 6.0, 1.0]])   # predicts 1
    assert accuracy(out, torch.tensor([1, 0, 2, 0])).item() == pytest.approx(0.75)
    assert accuracy(out, torch.tensor([1, 0, 2, 1])).item() == pytest.approx(1.0)
    assert accuracy(out, torch.tensor([0, 1, 0, 0])).item() == pytest.approx(0.0)

@pytest.mark.parametrize('f', [cross_entropy, nll, accuracy])
def test_classification_errors(f):
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"target has shape \(3,\).*shape \(4,\)"): f(x, y[:3])
    with pytest.raises(ValueError, match=r"target has shape \(4, 1\)"): f(x, y[:, None])
    with pytest.raises(ValueError, match=r"expected 2-D scores.*got shape \(3,\)"): f(x[0], y[:1])
    with pytest.raises(ValueError, match=r"expected 2-D scores.*got shape \(1, 4, 3\)"): f(x[None], y)
    with pytest.raises(TypeError, match="integer class indices.*float32"): f(x, y.float())
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\).*min -1"): f(x, torch.tensor([0, 1, -1, 0]))
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\).*max 3"): f(x, torch.tensor([0, 1, 3, 0]))

def test_dataset():
    x, y = torch.arange(10.)[:, None], torch.arange(10) * 2
    ds = Dataset(x, y)
    assert len(ds) == 10
    xi, yi = ds[3]
    assert xi.item() == 3. and yi.item() == 6
    with pytest.raises(ValueError, match="x has 10 items but y has 9"): Dataset(x, y[:9])

def test_collate_stacks():
    items = [(torch.full((2, 3), float(i)), i) for i in range(5)]
    xb, yb = collate(items)
    assert xb.shape == (5, 2, 3) and yb.shape == (5,) and yb.dtype == torch.int64
    assert torch.equal(xb[:, 0, 0], torch.arange(5.)) and torch.equal(yb, torch.arange(5))
    a, b, c = collate([(torch.ones(2), torch.zeros(4), 1.5), (torch.ones(2)*2, torch.ones(4), 2.5)])
    assert a.shape == (2, 2) and b.shape == (2, 4) and torch.equal(c, torch.tensor([1.5, 2.5], dtype=c.dtype))
    assert torch.equal(a[1], torch.tensor([2., 2.]))
    with pytest.raises(ValueError, match="empty batch"): collate([])

def idx_ds(n): return Dataset(torch.arange(n), torch.arange(n) % 3)

def seen(dl): return [xb.tolist() for xb, _ in dl]

def test_dataloader_unshuffled_keeps_order_and_last_partial_batch():
    dl = DataLoader(idx_ds(10), 4)
    assert seen(dl) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(dl) == 3 and seen(dl) == seen(dl)
    dl = DataLoader(idx_ds(10), 4, drop_last=True)
    assert seen(dl) == [[0, 1, 2, 3], [4, 5, 6, 7]] and len(dl) == 2
    dl = DataLoader(idx_ds(8), 4)
    assert seen(dl) == [[0, 1, 2, 3], [4, 5, 6, 7]] and len(dl) == 2

def test_dataloader_shuffled_visits_every_index_once_per_epoch():
    torch.manual_seed(0)
    dl = DataLoader(idx_ds(103), 10, shuffle=True)
    epochs = [sum(seen(dl), []) for _ in range(3)]
    for e in epochs: assert sorted(e) == list(range(103))
    assert [len(b) for b in seen(dl)] == [10]*10 + [3]
    assert epochs[0] != list(range(103)) and epochs[0] != epochs[1]   # really shuffled, and differently each epoch

def test_dataloader_yields_labels_with_their_inputs():
    torch.manual_seed(1)
    for xb, yb in DataLoader(idx_ds(50), 7, shuffle=True): assert torch.equal(yb, xb % 3)

def test_dataloader_matches_torch_unshuffled():
    ds = Dataset(torch.randn(37, 4), torch.randint(0, 5, (37,)))
    for (xa, ya), (xb, yb) in zip(DataLoader(ds, 8), torch.utils.data.DataLoader(ds, 8), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)

def test_samplers_and_dataloader_options():
    assert list(Sampler(range(5))) == [0, 1, 2, 3, 4]
    torch.manual_seed(2)
    assert sorted(Sampler(range(20), shuffle=True)) == list(range(20))
    assert list(BatchSampler(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]] and len(BatchSampler(range(7), 3)) == 3
    assert len(BatchSampler(range(7), 3, drop_last=True)) == 2
    dl = DataLoader(idx_ds(6), batch_sampler=[[5, 0], [2]])
    assert seen(dl) == [[5, 0], [2]]
    # our batch sampler and collate drive torch's DataLoader
    tdl = torch.utils.data.DataLoader(idx_ds(6), batch_sampler=BatchSampler(Sampler(range(6)), 4), collate_fn=collate)
    assert seen(tdl) == [[0, 1, 2, 3], [4, 5]]
    with pytest.raises(ValueError, match="BatchSampler: bs must be an integer >= 1"): BatchSampler(range(5), 0)
    with pytest.raises(ValueError, match="batch_sampler already decides"): DataLoader(idx_ds(6), 4, batch_sampler=[[0]])
    with pytest.raises(ValueError, match="either sampler or shuffle"): DataLoader(idx_ds(6), 2, True, sampler=range(6))

def test_optimizer_matches_torch_sgd():
    g = torch.Generator().manual_seed(0)
    w1, b1 = torch.randn(6, 4, generator=g, requires_grad=True), torch.randn(4, generator=g, requires_grad=True)
    w2, b2 = [t.detach().clone().requires_grad_() for t in (w1, b1)]
    x = torch.randn(5, 6, generator=g)
    ours, theirs = Optimizer([w1, b1], lr=0.05), torch.optim.SGD([w2, b2], lr=0.05)
    for _ in range(10):
        for w, b, opt in ((w1, b1, ours), (w2, b2, theirs)):
            ((x @ w + b).tanh()**2).sum().backward(); opt.step(); opt.zero_grad()
    assert_close(w1, w2); assert_close(b1, b2)
    assert w1.grad is None and b1.grad is None
    assert not torch.equal(w1, torch.randn(6, 4, generator=torch.Generator().manual_seed(0)))  # it moved

def test_optimizer_skips_params_without_grad_and_checks_input():
    a, b = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    (a * 2).sum().backward()
    Optimizer([a, b], lr=0.5).step()
    assert_close(a.detach(), torch.zeros(3)); assert_close(b.detach(), torch.ones(3))
    m = nn.Linear(2, 2); gen = m.parameters(); list(gen)
    with pytest.raises(ValueError, match="got no parameters"): Optimizer(gen)
    with pytest.raises(ValueError, match="Optimizer: lr must be a number >= 0"): Optimizer(m.parameters(), lr=-1)

class TwoInputs(nn.Module):
    "Scores from two inputs; with fixed weights, so fit's metrics can be computed by hand."
    def __init__(self): super().__init__(); self.lin = nn.Linear(3, 4)
    def forward(self, a, b): return self.lin(a) + b

def test_fit_metrics_weighted_by_true_batch_size():
    torch.manual_seed(0)
    n = 9
    a, b = torch.randn(n, 3), torch.randn(n, 4)
    model = TwoInputs()
    with torch.no_grad(): pred = model(a, b)
    y = pred.argmax(1).clone()
    y[-1] = (y[-1] + 1) % 4                     # every prediction right except the last one
    ds = torch.utils.data.TensorDataset(a, b, y)
    valid_dl = torch.utils.data.DataLoader(ds, batch_size=4)   # batches of 4, 4, 1; the input tuple has length 2
    hist = fit(1, model, F.cross_entropy, Optimizer(model.parameters(), lr=0.1), [], valid_dl)
    (loss, acc), = hist
    assert acc == pytest.approx(8 / 9)            # per-batch mean would be (1 + 1 + 0)/3 = 0.667
    assert loss == pytest.approx(F.cross_entropy(pred, y).item(), rel=1e-5)
    per_batch = sum(F.cross_entropy(pred[i:i+4], y[i:i+4]).item() for i in range(0, n, 4)) / 3
    assert abs(per_batch - loss) > 1e-3           # the case really tells the two averages apart

def test_fit_trains_and_is_reproducible():
    def run():
        torch.manual_seed(3)
        x = torch.randn(200, 5); y = (x[:, 0] + x[:, 1] > 0).long()
        train_dl, valid_dl = get_dls(Dataset(x[:150], y[:150]), Dataset(x[150:], y[150:]), bs=16)
        model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2))
        return fit(4, model, cross_entropy, Optimizer(model.parameters(), lr=0.3), train_dl, valid_dl), model
    (h1, m1), (h2, m2) = run(), run()
    assert h1 == h2
    for p, q in zip(m1.parameters(), m2.parameters()): assert torch.equal(p, q)
    assert len(h1) == 4 and h1[-1][0] < h1[0][0] and h1[-1][1] > 0.8

def test_fit_errors():
    model = nn.Linear(2, 3)
    with pytest.raises(ValueError, match="valid_dl gave no items"): fit(1, model, cross_entropy, Optimizer(model.parameters()), [], [])
    with pytest.raises(ValueError, match="fit: epochs must be an integer >= 0"): fit(-1, model, cross_entropy, Optimizer(model.parameters()), [], [])

def test_get_dls():
    train_ds, valid_ds = idx_ds(50), idx_ds(30)
    torch.manual_seed(0)
    train_dl, valid_dl = get_dls(train_ds, valid_ds, bs=8)
    assert isinstance(train_dl, torch.utils.data.DataLoader) and isinstance(valid_dl, torch.utils.data.DataLoader)
    assert train_dl.batch_size == 8 and valid_dl.batch_size == 16
    assert seen(valid_dl) == [list(range(16)), list(range(16, 30))]
    ep = sum(seen(train_dl), [])
    assert sorted(ep) == list(range(50)) and ep != list(range(50))


# --- bad input: one clear error; empty loaders; sizes; modes restored ------------------------------------------

def test_logsumexp_edge_cases_match_torch():
    for shape in ((3, 0), (0,), (2, 0, 0)):
        x = torch.randn(shape)
        assert_close(logsumexp(x), torch.logsumexp(x, -1))
        assert_close(log_softmax(x), F.log_softmax(x, -1))
    xi = torch.tensor([[1, 2, 3]])
    assert_close(logsumexp(xi), torch.logsumexp(xi.float(), -1))
    with pytest.raises(TypeError, match='logsumexp: expected a tensor of scores, got list'): logsumexp([1., 2.])
    with pytest.raises(TypeError, match='logsumexp: expected a tensor'): log_softmax(None)
    with pytest.raises(ValueError, match='logsumexp: got a 0-d tensor'): logsumexp(torch.tensor(1.))
    for bad in (torch.ones(2, dtype=torch.bool), torch.ones(2, dtype=torch.complex64)):
        with pytest.raises(TypeError, match='logsumexp: scores must be real numbers'): log_softmax(bad)

@pytest.mark.parametrize('f', [cross_entropy, nll, accuracy])
def test_classification_rejects_empty_batches_and_non_tensors(f):
    with pytest.raises(ValueError, match=rf'{f.__name__}: got an empty batch \(0 rows\)'):
        f(torch.randn(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(TypeError, match=rf'{f.__name__}: input must be a tensor, not list'): f([[0., 1.]], torch.tensor([1]))
    with pytest.raises(TypeError, match=rf'{f.__name__}: target must be a tensor, not list'): f(torch.randn(1, 2), [1])
    with pytest.raises(TypeError, match='integer class indices.*bool'): f(torch.randn(2, 2), torch.tensor([True, False]))

def test_optimizer_bad_params_and_lr():
    w = torch.ones(3, requires_grad=True)
    for bad in (w, None, 3):
        with pytest.raises(TypeError, match=r'Optimizer: params must be an iterable of tensors'): Optimizer(bad)
    with pytest.raises(TypeError, match='every parameter must be a tensor'): Optimizer([w, 1.0])
    with pytest.raises(ValueError, match='appears more than once'): Optimizer([w, w])
    for bad, err in ((float('nan'), ValueError), (float('inf'), ValueError), ('0.1', TypeError), (None, TypeError),
                     (True, TypeError), (-1e-9, ValueError)):
        with pytest.raises(err, match='Optimizer: lr must be'): Optimizer([w], lr=bad)
    assert Optimizer([w], lr=0).lr == 0 and Optimizer([w], lr=torch.tensor(0.1)).lr == pytest.approx(0.1)

def test_dataset_and_sampler_bad_input():
    for x, y in ((3, [1]), ([1], None), (torch.tensor(1.), torch.tensor(2.))):
        with pytest.raises(TypeError, match='Dataset: [xy] must have a length'): Dataset(x, y)
    with pytest.raises(TypeError, match='Sampler: ds must have a length'): Sampler(5)
    for bad in ('yes', 1, None):
        with pytest.raises(TypeError, match='Sampler: shuffle must be True or False'): Sampler(range(3), shuffle=bad)

@pytest.mark.parametrize('bs,err', [(0, ValueError), (-2, ValueError), (2.0, TypeError), (True, TypeError),
                                    ('4', TypeError), (None, TypeError)])
def test_batch_sizes_checked_everywhere(bs, err):
    ds = idx_ds(10)
    with pytest.raises(err, match='BatchSampler: bs must be an integer >= 1'): BatchSampler(range(10), bs)
    with pytest.raises(err, match='DataLoader: batch_size must be an integer >= 1'): DataLoader(ds, bs)
    with pytest.raises(err, match='get_dls: bs must be an integer >= 1'): get_dls(ds, ds, bs)

def test_batch_sampler_bad_input():
    with pytest.raises(TypeError, match='sampler must be an iterable of indices'): BatchSampler(5, 2)
    with pytest.raises(TypeError, match='drop_last must be True or False'): BatchSampler(range(4), 2, drop_last='no')
    bsmp = BatchSampler((i for i in range(5)), 2)
    with pytest.raises(TypeError, match='BatchSampler: for len\\(\\), the sampler must have a length'): len(bsmp)
    assert list(bsmp) == [[0, 1], [2, 3], [4]]     # iterating a generator sampler still works

@pytest.mark.parametrize('drop_last', [False, True])
@pytest.mark.parametrize('shuffle', [False, True])
def test_loader_over_zero_items_yields_nothing(shuffle, drop_last):
    "An empty dataset (or sampler) gives a loader of length 0 that yields no batch at all, not one empty batch."
    dl = DataLoader(idx_ds(0), 4, shuffle, drop_last=drop_last)
    assert len(dl) == 0 and list(dl) == []
    dl = DataLoader(idx_ds(5), 4, sampler=[], drop_last=drop_last)
    assert len(dl) == 0 and list(dl) == []
    assert list(BatchSampler(Sampler(range(0), shuffle), 3, drop_last)) == []
    dl = DataLoader(idx_ds(3), 4, drop_last=True)                     # fewer items than a batch, dropped
    assert len(dl) == 0 and list(dl) == []
    with pytest.raises(ValueError, match='collate: got an empty batch'): list(DataLoader(idx_ds(3), batch_sampler=[[]]))

def test_get_dls_refuses_empty_or_unshufflable_datasets():
    ds = idx_ds(8)
    with pytest.raises(ValueError, match='get_dls: train_ds is empty'): get_dls(idx_ds(0), ds, 4)
    with pytest.raises(ValueError, match='get_dls: valid_ds is empty'): get_dls(ds, idx_ds(0), 4)
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self): return iter([(torch.ones(2), 0)] * 3)
    with pytest.raises(TypeError, match='get_dls: train_ds is an IterableDataset, which cannot be shuffled'):
        get_dls(Stream(), ds, 4)
    _, vdl = get_dls(ds, Stream(), 4)                                  # a stream is fine for validation
    assert [len(y) for _, y in vdl] == [3]
    with pytest.raises(TypeError, match='get_dls: train_ds must have a length'): get_dls(5, ds, 4)

def test_collate_bad_items():
    with pytest.raises(TypeError, match=r'collate: each item must be a tuple like \(x, y\), got Tensor'):
        collate([torch.ones(2), torch.ones(2)])
    with pytest.raises(ValueError, match=r'different numbers of fields \[1, 2\]'): collate([(1, 2), (3,)])
    with pytest.raises(ValueError, match=r'collate: field 0 of the items cannot be stacked.*same shape'):
        collate([(torch.ones(2), 0), (torch.ones(3), 1)])
    with pytest.raises(TypeError, match=r'collate: field 1 of an item is not a tensor or a number'):
        collate([(torch.ones(2), 'cat'), (torch.ones(2), 'dog')])

def test_dataloader_bad_arguments():
    ds = idx_ds(6)
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self): return iter([])
    for bad in (Stream(), 5, None):
        with pytest.raises(TypeError, match=r'DataLoader: dataset must give items by index'): DataLoader(bad, 2)
    with pytest.raises(TypeError, match='DataLoader: shuffle must be True or False'): DataLoader(ds, 2, 'yes')
    with pytest.raises(TypeError, match='DataLoader: drop_last must be True or False'): DataLoader(ds, 2, drop_last=1)
    with pytest.raises(TypeError, match='collate_fn must be a function'): DataLoader(ds, 2, collate_fn='stack')
    with pytest.raises(TypeError, match='batch_sampler must be an iterable of index lists'): DataLoader(ds, batch_sampler=3)
    with pytest.raises(TypeError, match='BatchSampler: sampler must be an iterable'): DataLoader(ds, 2, sampler=7)

def _fit_args(n=12):
    torch.manual_seed(0)
    ds = Dataset(torch.randn(n, 2), torch.randint(0, 3, (n,)))
    model = nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.1))
    return model, cross_entropy, Optimizer(model.parameters(), lr=0.1), DataLoader(ds, 4), DataLoader(ds, 4)

@pytest.mark.parametrize('epochs,err', [(-1, ValueError), (1.5, TypeError), (2.0, TypeError), (True, TypeError),
                                        ('3', TypeError), (None, TypeError)])
def test_fit_epochs_checked(epochs, err):
    with pytest.raises(err, match='fit: epochs must be an integer >= 0'): fit(epochs, *_fit_args())

def test_fit_zero_epochs_and_bad_arguments():
    model, loss, opt, tdl, vdl = _fit_args()
    before = [p.detach().clone() for p in model.parameters()]
    assert fit(0, model, loss, opt, tdl, vdl) == []
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    with pytest.raises(TypeError, match='fit: model must be callable'): fit(1, 'model', loss, opt, tdl, vdl)
    with pytest.raises(TypeError, match='fit: loss_func must be callable'): fit(1, model, None, opt, tdl, vdl)
    with pytest.raises(TypeError, match=r'fit: opt must have step\(\) and zero_grad\(\)'): fit(1, model, loss, 0.1, tdl, vdl)
    with pytest.raises(TypeError, match='fit: train_dl must be iterable'): fit(1, model, loss, opt, 5, vdl)
    with pytest.raises(TypeError, match='fit: valid_dl is an iterator .* runs dry after one epoch'):
        fit(2, model, loss, opt, tdl, iter(list(vdl)))
    assert len(fit(1, model, loss, opt, iter(list(tdl)), iter(list(vdl)))) == 1   # one epoch: an iterator is fine

def test_fit_rejects_batches_that_are_not_pairs_and_non_scalar_losses():
    model, loss, opt, tdl, vdl = _fit_args()
    with pytest.raises(TypeError, match=r'fit: each batch of train_dl must be a tuple \(inputs..., target\), got Tensor'):
        fit(1, model, loss, opt, [torch.randn(4, 2)], vdl)
    with pytest.raises(TypeError, match=r'each batch of valid_dl .* got tuple of length 1'):
        fit(1, model, loss, opt, [], [(torch.randn(4, 2),)])
    per_item = lambda p, y: F.cross_entropy(p, y, reduction='none')
    with pytest.raises(ValueError, match=r'fit: loss_func must return one number .* got shape \(4,\)'):
        fit(1, model, per_item, opt, tdl, vdl)
    with pytest.raises(TypeError, match='fit: loss_func must return a tensor, got float'):
        fit(1, model, lambda p, y: 1.0, opt, tdl, vdl)
    with pytest.raises(ValueError, match='fit: valid_dl gave no items'): fit(1, model, loss, opt, tdl, DataLoader(idx_ds(0), 4))

@pytest.mark.parametrize('start', ['train', 'eval', 'mixed'])
def test_fit_restores_every_module_mode(start):
    "Whatever mode the model and its parts were in, fit leaves them so: after a normal return and after an error."
    model, loss, opt, tdl, vdl = _fit_args()
    model.train(start != 'eval')
    if start == 'mixed': model[1].eval()
    modes = [m.training for m in model.modules()]
    fit(1, model, loss, opt, tdl, vdl)
    assert [m.training for m in model.modules()] == modes
    def failing(p, y):
        if not model.training: raise RuntimeError('boom in validation')
        return cross_entropy(p, y)
    with pytest.raises(RuntimeError, match='boom'): fit(1, model, failing, opt, tdl, vdl)
    assert [m.training for m in model.modules()] == modes

@pytest.mark.parametrize('dtype', [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_any_integer_target_dtype_matches_torch(dtype):
    "A uint8 index would be read as a mask and int8/int16 are refused as indices: every integer dtype works."
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 4, generator=g), torch.tensor([1, 0, 3, 2, 2, 0])
    assert_close(cross_entropy(x, y.to(dtype)), F.cross_entropy(x, y))
    assert_close(nll(F.log_softmax(x, -1), y.to(dtype)), F.nll_loss(F.log_softmax(x, -1), y))
    assert accuracy(x, y.to(dtype)).item() == accuracy(x, y).item()

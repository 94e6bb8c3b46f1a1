"Tests of miniai.learner: events and cancellation, the training step against a plain loop, metrics, seeds, LR finder, checkpoints, errors."
import math, os, random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from miniai.conv import conv
from miniai.datasets import DataLoaders, fashion_dls
from miniai.learner import (Accuracy, Callback, CancelBatchException, CancelEpochException, CancelFitException, DeviceCB,
                            Learner, LRFinderCB, Mean, Metric, MetricsCB, ProgressCB, TrainCB, save_atomic, set_seed)


def toy_dls(n_train=100, n_valid=30, bs=16, seed=0, n_in=8, n_out=4):
    "Random inputs labelled by a fixed random linear map (learnable), in torch DataLoaders; the last batches are smaller."
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n_in, n_out, generator=g)
    x = torch.randn(n_train + n_valid, n_in, generator=g)
    y = (x @ w).argmax(1)
    tds = torch.utils.data.TensorDataset(x[:n_train], y[:n_train])
    vds = torch.utils.data.TensorDataset(x[n_train:], y[n_train:])
    return DataLoaders(torch.utils.data.DataLoader(tds, bs, shuffle=True, generator=torch.Generator().manual_seed(seed)),
                       torch.utils.data.DataLoader(vds, bs))


def toy_model(seed=0, n_in=8, n_out=4):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, 16), nn.ReLU(), nn.Linear(16, n_out))


def quiet(*ms, **named):
    "A MetricsCB that keeps its rows in `hist` without printing them."
    cb = MetricsCB(*ms, **named)
    cb.log = lambda row: None
    return cb


class Record(Callback):
    "Records every event it sees, in order."
    events = ('before_fit', 'after_fit', 'cleanup_fit', 'before_epoch', 'after_epoch', 'cleanup_epoch',
              'before_batch', 'after_batch', 'cleanup_batch', 'predict', 'get_loss', 'backward', 'step', 'zero_grad')
    order = 5
    def __init__(self): self.seen = []
    def __getattr__(self, name):
        if name in Record.events: return lambda learn: self.seen.append((name, learn.training) if 'epoch' in name else name)
        raise AttributeError(name)


class Raise(Callback):
    "Raises `exc` at event `at` on the `nth` time it happens."
    def __init__(self, at, exc, nth=1): self.at, self.exc, self.nth, self.count = at, exc, nth, 0
    def __getattr__(self, name):
        if name != self.__dict__.get('at'): raise AttributeError(name)
        def f(learn):
            self.count += 1
            if self.count == self.nth: raise self.exc()
        return f


# --- events and cancellation -------------------------------------------------------------------------------------

def test_event_order_for_one_epoch():
    dls = toy_dls(n_train=32, n_valid=16, bs=16)
    rec = Record()
    Learner(toy_model(), dls, cbs=[TrainCB(), rec]).fit(1)
    train_batch = ['before_batch', 'predict', 'get_loss', 'backward', 'step', 'zero_grad', 'after_batch', 'cleanup_batch']
    valid_batch = ['before_batch', 'predict', 'get_loss', 'after_batch', 'cleanup_batch']
    assert rec.seen == (['before_fit', ('before_epoch', True)] + train_batch*2 + [('after_epoch', True), ('cleanup_epoch', True),
                        ('before_epoch', False)] + valid_batch + [('after_epoch', False), ('cleanup_epoch', False), 'after_fit', 'cleanup_fit'])


def test_callbacks_run_in_order_and_fit_cbs_are_temporary():
    calls = []
    class A(Callback):
        order = 2
        def before_fit(self, learn): calls.append('A')
    class B(Callback):
        order = 1
        def before_fit(self, learn): calls.append('B')
    learn = Learner(toy_model(), toy_dls(), cbs=[A(), TrainCB()])
    learn.fit(1, cbs=[B()])
    assert calls == ['B', 'A']
    learn.fit(1)
    assert calls == ['B', 'A', 'A']


def test_cancel_batch_skips_the_rest_of_that_batch_only():
    dls = toy_dls(n_train=48, n_valid=16, bs=16)
    rec = Record()
    Learner(toy_model(), dls, cbs=[TrainCB(), Raise('predict', CancelBatchException, nth=2), rec]).fit(1)
    # Raise (order 0) runs before Record (order 5): the cancelled batch never reaches Record's predict or after_batch
    assert rec.seen.count('predict') == 3 and rec.seen.count('step') == 2 and rec.seen.count('after_batch') == 3
    assert rec.seen.count('cleanup_batch') == 4 and 'after_fit' in rec.seen


def test_cancel_epoch_ends_the_pass_and_fit_goes_on():
    dls = toy_dls(n_train=48, n_valid=32, bs=16)
    rec = Record()
    Learner(toy_model(), dls, cbs=[TrainCB(), Raise('after_batch', CancelEpochException), rec]).fit(2)
    assert rec.seen.count('predict') == 1 + 2 + 3 + 2  # only the first pass of all is cut short, after its first batch
    assert ('after_epoch', True) in rec.seen and rec.seen.count(('cleanup_epoch', True)) == 2 and 'after_fit' in rec.seen


def test_cancel_fit_skips_remaining_epochs_and_after_fit_but_runs_cleanup():
    rec = Record()
    Learner(toy_model(), toy_dls(bs=16), cbs=[TrainCB(), Raise('before_batch', CancelFitException, nth=10), rec]).fit(5)
    assert rec.seen.count('predict') == 9 and 'after_fit' not in rec.seen and rec.seen[-1] == 'cleanup_fit'


def test_other_errors_propagate_after_cleanup():
    rec = Record()
    with pytest.raises(KeyError):
        Learner(toy_model(), toy_dls(), cbs=[TrainCB(), Raise('step', KeyError, nth=3), rec]).fit(1)
    assert rec.seen[-3:] == ['cleanup_batch', ('cleanup_epoch', True), 'cleanup_fit']


# --- the training step ---------------------------------------------------------------------------------------------

def test_learner_trains_exactly_like_a_plain_loop():
    dls1, dls2 = toy_dls(seed=3), toy_dls(seed=3)
    m1, m2 = toy_model(1), toy_model(1)
    Learner(m1, dls1, lr=0.3, cbs=[TrainCB(), DeviceCB('cpu')]).fit(2)
    opt = torch.optim.SGD(m2.parameters(), lr=0.3)
    for _ in range(2):
        for xb, yb in dls2.train:
            F.cross_entropy(m2(xb), yb).backward(); opt.step(); opt.zero_grad()
    for p1, p2 in zip(m1.parameters(), m2.parameters()): torch.testing.assert_close(p1, p2, rtol=0, atol=0)


def test_validation_does_not_train_and_uses_eval_mode():
    model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 4))
    modes = []
    class Mode(Callback):
        def before_batch(self, learn): modes.append((learn.training, learn.model.training, torch.is_grad_enabled()))
    before = [p.detach().clone() for p in model.parameters()]
    Learner(model, toy_dls(n_train=16, n_valid=16), cbs=[TrainCB(), Mode()]).fit(1, train=False)
    assert modes == [(False, False, False)]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_multiple_inputs_and_true_batch_size_in_metrics():
    "Batches (x1, x2, y): inputs are all but the last; metrics weigh by len(y) (13 and 7 items), not by the 2 inputs."
    g = torch.Generator().manual_seed(0)
    x1, x2, y = torch.randn(20, 3, generator=g), torch.randn(20, 3, generator=g), torch.randint(0, 2, (20,), generator=g)
    batches = [(x1[:13], x2[:13], y[:13]), (x1[13:], x2[13:], y[13:])]
    class Two(nn.Module):
        def __init__(self): super().__init__(); self.lin = nn.Linear(6, 2)
        def forward(self, a, b): return self.lin(torch.cat([a, b], 1))
    model = Two()
    learn = Learner(model, SimpleNamespace(train=batches, valid=batches), cbs=[TrainCB(), quiet(Accuracy())])
    learn.fit(1, train=False)
    with torch.no_grad(): preds = model(x1, x2)
    row = learn.metrics.hist[0]
    assert row['valid_loss'] == pytest.approx(F.cross_entropy(preds, y).item(), rel=1e-6)
    assert row['valid_accuracy'] == pytest.approx((preds.argmax(1) == y).float().mean().item(), rel=1e-6)


# --- metrics -------------------------------------------------------------------------------------------------------

def test_metrics_are_item_weighted_not_batch_averages():
    g = torch.Generator().manual_seed(1)
    preds, targs = torch.randn(37, 5, generator=g), torch.randint(0, 5, (37,), generator=g)
    acc, loss = Accuracy(), Mean()
    for i in range(0, 37, 16):  # batches of 16, 16, 5
        acc.add(preds[i:i+16], targs[i:i+16])
        loss.add(F.cross_entropy(preds[i:i+16], targs[i:i+16]), n=len(targs[i:i+16]))
    assert acc.count == 37 and loss.count == 37
    assert acc.value == pytest.approx((preds.argmax(1) == targs).float().mean().item(), rel=1e-6)
    assert loss.value == pytest.approx(F.cross_entropy(preds, targs).item(), rel=1e-6)
    acc.reset()
    with pytest.raises(ValueError, match='nothing added'): acc.value
    with pytest.raises(ValueError, match='targets or the batch size'): Mean().add(torch.tensor(1.))


def test_metric_total_stays_a_tensor_until_value():
    "No .item() per batch: the running sum is a tensor; a custom Metric only defines calc."
    class MAE(Metric):
        def calc(self, preds, targs): return (preds - targs).abs().mean()
    m = MAE()
    m.add(torch.tensor([1., 2.]), torch.tensor([0., 0.])); m.add(torch.tensor([4.]), torch.tensor([0.]))
    assert isinstance(m.total, torch.Tensor) and m.value == pytest.approx(7/3)


def test_metricscb_matches_a_direct_evaluation():
    dls = toy_dls(n_valid=30, bs=16)  # validation batches of 16 and 14
    model = toy_model()
    learn = Learner(model, dls, lr=0.3, cbs=[TrainCB(), quiet(Accuracy(), mean_pred=Mean())])
    learn.fit(2)
    hist = learn.metrics.hist
    assert [r['epoch'] for r in hist] == [0, 1]
    assert set(hist[0]) == {'epoch', 'train_loss', 'train_accuracy', 'train_mean_pred', 'valid_loss', 'valid_accuracy', 'valid_mean_pred', 'time'}
    x, y = dls.valid.dataset.tensors
    with torch.no_grad(): preds = model(x)
    assert hist[-1]['valid_loss'] == pytest.approx(F.cross_entropy(preds, y).item(), rel=1e-5)
    assert hist[-1]['valid_accuracy'] == pytest.approx((preds.argmax(1) == y).float().mean().item(), abs=1e-6)
    assert hist[-1]['valid_mean_pred'] == pytest.approx(preds.mean().item(), abs=1e-5)
    assert hist[-1]['train_loss'] < hist[0]['train_loss']


def test_metricscb_prints_rows_and_progresscb_puts_them_in_its_table(capsys):
    learn = Learner(toy_model(), toy_dls(), cbs=[TrainCB(), MetricsCB(Accuracy())])
    learn.fit(1)
    out = capsys.readouterr().out
    assert 'epoch 0' in out and 'train_loss' in out and 'valid_accuracy' in out
    learn = Learner(toy_model(), toy_dls(), cbs=[TrainCB(), MetricsCB(Accuracy()), ProgressCB(plot=True, plot_every=0)])
    learn.fit(2)
    out = capsys.readouterr().out
    assert '\r' not in out and '█' not in out  # not a terminal: plain lines only, no bar redraws
    lines = out.splitlines()
    assert lines[0].split() == ['epoch', 'train_loss', 'train_accuracy', 'valid_loss', 'valid_accuracy', 'time']
    assert [l.split()[0] for l in lines[1:]] == ['0', '1']
    assert float(lines[-1].split()[3]) == pytest.approx(learn.metrics.hist[-1]['valid_loss'], abs=1e-4)


def test_progresscb_without_metrics_and_fit_only_valid():
    learn = Learner(toy_model(), toy_dls(), cbs=[TrainCB(), ProgressCB(plot=True)])
    learn.fit(1)
    learn = Learner(toy_model(), toy_dls(), cbs=[TrainCB(), MetricsCB(), ProgressCB()])
    learn.fit(1, train=False)
    assert set(learn.metrics.hist[0]) == {'epoch', 'valid_loss', 'time'}


# --- seeds ---------------------------------------------------------------------------------------------------------

def _seeded_cnn_fit(seed):
    set_seed(seed)
    model = nn.Sequential(conv(1, 4), conv(4, 8), conv(8, 16), conv(16, 10, act=False), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    learn = Learner(model, fashion_dls(bs=32, n_train=96, n_valid=64, seed=seed), lr=0.2, cbs=[TrainCB(), DeviceCB(), quiet(Accuracy())])
    learn.fit(2)
    return [{k: v for k, v in r.items() if k != 'time'} for r in learn.metrics.hist]


def test_two_seeded_fits_give_identical_metrics():
    a, b, c = _seeded_cnn_fit(11), _seeded_cnn_fit(11), _seeded_cnn_fit(12)
    assert a == b
    assert a != c  # the seed matters, so the equality above is not trivial


def test_set_seed_seeds_random_numpy_and_torch():
    set_seed(5); r1 = (random.random(), np.random.rand(), torch.rand(1).item())
    set_seed(5); r2 = (random.random(), np.random.rand(), torch.rand(1).item())
    assert r1 == r2
    set_seed(5, deterministic=True)
    try: assert torch.are_deterministic_algorithms_enabled()
    finally: set_seed(5)
    assert not torch.are_deterministic_algorithms_enabled()


# --- LR finder -----------------------------------------------------------------------------------------------------

def test_lr_finder_grows_lr_geometrically_stops_on_explosion_and_restores_the_model():
    import matplotlib; matplotlib.use('Agg')
    dls = toy_dls(n_train=256, bs=16)
    model = toy_model()
    learn = Learner(model, dls, cbs=[TrainCB()])
    before = [p.detach().clone() for p in model.parameters()]
    cb = learn.lr_find(start_lr=1e-4, gamma=1.5, max_mult=3, max_lr=1e6, plot=True)
    assert isinstance(cb, LRFinderCB) and len(cb.lrs) == len(cb.losses) > 5
    lrs = torch.tensor(cb.lrs, dtype=torch.float64)
    torch.testing.assert_close(lrs[1:] / lrs[:-1], torch.full((len(lrs)-1,), 1.5, dtype=torch.float64))
    assert cb.lrs[0] == pytest.approx(1e-4)
    assert cb.lrs[-1] < 1e6 and (math.isnan(cb.losses[-1]) or cb.losses[-1] > 3*min(cb.losses))  # stopped by the explosion
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())) and learn.opt is None


def test_lr_finder_stops_at_max_lr():
    cb = Learner(toy_model(), toy_dls(n_train=64, bs=16), cbs=[TrainCB()]).lr_find(start_lr=1e-6, gamma=2, max_lr=1e-3, plot=False)
    assert cb.lrs[-1] <= 1e-3 < cb.lrs[-1]*2 and len(cb.lrs) == 10  # 1e-6 * 2**9 = 5.1e-4, and the next rate would pass 1e-3


# --- checkpoints ---------------------------------------------------------------------------------------------------

def test_save_load_round_trip_resumes_identically(tmp_path):
    opt_func = lambda params, lr: torch.optim.SGD(params, lr, momentum=0.9)
    learn = Learner(toy_model(1), toy_dls(seed=2), lr=0.1, cbs=[TrainCB()], opt_func=opt_func)
    learn.fit(1)
    path = learn.save(tmp_path/'sub'/'ck.pth')
    assert path.exists() and os.listdir(path.parent) == ['ck.pth']
    learn2 = Learner(toy_model(7), toy_dls(seed=2), lr=0.1, cbs=[TrainCB()], opt_func=opt_func).load(path)
    for a, b in zip(learn.model.state_dict().values(), learn2.model.state_dict().values()): assert torch.equal(a, b)
    s1, s2 = learn.opt.state_dict(), learn2.opt.state_dict()
    assert s1['param_groups'] == s2['param_groups'] and all(torch.equal(s1['state'][k]['momentum_buffer'], s2['state'][k]['momentum_buffer']) for k in s1['state'])
    # training on from the checkpoint gives exactly what training on from the original gives
    learn.dls, learn2.dls = toy_dls(seed=9), toy_dls(seed=9)
    learn.fit(1); learn2.fit(1)
    for a, b in zip(learn.model.parameters(), learn2.model.parameters()): assert torch.equal(a, b)


def test_save_without_opt_and_load_errors(tmp_path):
    learn = Learner(toy_model(), toy_dls(), cbs=[TrainCB()])
    learn.fit(1)
    learn.save(tmp_path/'m.pth', with_opt=False)
    assert set(torch.load(tmp_path/'m.pth', weights_only=True)) == {'model'}
    torch.save({'weights': 1}, tmp_path/'other.pth')
    with pytest.raises(ValueError, match='not a Learner checkpoint'): learn.load(tmp_path/'other.pth')
    with pytest.raises(RuntimeError, match='size mismatch'): Learner(toy_model(n_out=3), toy_dls()).load(tmp_path/'m.pth')


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    path = save_atomic({'v': torch.ones(3)}, tmp_path/'ck.pth')
    def broken_save(obj, f):
        f.write(b'half a checkpoint'); raise OSError('disk full')
    monkeypatch.setattr(torch, 'save', broken_save)
    with pytest.raises(OSError, match='disk full'): save_atomic({'v': torch.zeros(3)}, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ['ck.pth']  # no temporary file left behind
    assert torch.equal(torch.load(path, weights_only=True)['v'], torch.ones(3))  # the old checkpoint is intact


# --- clear errors --------------------------------------------------------------------------------------------------

def test_fit_without_data_says_what_to_pass():
    with pytest.raises(ValueError, match=r'no data; pass dls'): Learner(toy_model(), None, cbs=[TrainCB()]).fit(1)
    empty = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(0, 8), torch.zeros(0).long()), batch_size=4)
    good = toy_dls()
    with pytest.raises(ValueError, match=r'dls.train has no batches'): Learner(toy_model(), DataLoaders(empty, good.valid), cbs=[TrainCB()]).fit(1)
    with pytest.raises(ValueError, match=r'dls.valid has no batches.*fit\(valid=False\)'):
        Learner(toy_model(), DataLoaders(good.train, empty), cbs=[TrainCB()]).fit(1)
    Learner(toy_model(), DataLoaders(good.train, empty), cbs=[TrainCB()]).fit(1, valid=False)  # fine without validation
    with pytest.raises(ValueError, match=r'dls.valid is missing'): Learner(toy_model(), SimpleNamespace(train=good.train), cbs=[TrainCB()]).fit(1)
    with pytest.raises(ValueError, match=r'add TrainCB\(\)'): Learner(toy_model(), good).fit(1)
    with pytest.raises(ValueError, match=r'both False'): Learner(toy_model(), good, cbs=[TrainCB()]).fit(1, train=False, valid=False)


@pytest.mark.filterwarnings('ignore:Using a target size')  # MSELoss warns before it fails
def test_output_that_does_not_fit_the_loss_is_one_clear_error():
    dls = toy_dls(n_out=10, bs=32, n_train=64)
    too_few = nn.Sequential(nn.Linear(8, 5))  # 5 scores for 10 classes
    with pytest.raises(ValueError, match=r"model's output \(32, 5\) does not fit loss_func cross_entropy with target \(32,\)"):
        Learner(too_few, dls, cbs=[TrainCB()]).fit(1)
    extra_dims = nn.Sequential(nn.Linear(8, 10), nn.Unflatten(1, (10, 1, 1)))  # (B, 10, 1, 1): forgot to flatten
    with pytest.raises(ValueError, match=r"output \(32, 10, 1, 1\) does not fit loss_func cross_entropy with target \(32,\)"):
        Learner(extra_dims, dls, cbs=[TrainCB()]).fit(1)
    with pytest.raises(ValueError, match=r"output \(32, 2\) does not fit loss_func MSELoss with target \(32, 3\)"):
        Learner(nn.Linear(8, 2), SimpleNamespace(train=[(torch.randn(32, 8), torch.randn(32, 3))], valid=[]), nn.MSELoss(), cbs=[TrainCB()]).fit(1, valid=False)
    with pytest.raises(ValueError, match=r'returned shape \(32,\).*one number'):
        Learner(nn.Linear(8, 10), dls, nn.CrossEntropyLoss(reduction='none'), cbs=[TrainCB()]).fit(1)

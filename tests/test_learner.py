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
from miniai.checkpoint import save_atomic
from miniai.data import DataError
from miniai.learner import (Accuracy, Callback, CancelBatchException, CancelEpochException, CancelFitException, DeviceCB,
                            Learner, LRFinderCB, Mean, Metric, MetricsCB, ProgressCB, TrainCB, set_seed, split_batch)


class Record(Callback):
    "Records every event it sees, in order."
    events = ('before_fit', 'after_fit', 'cleanup_fit', 'before_epoch', 'after_epoch', 'cleanup_epoch',
              'before_batch', 'after_batch', 'cleanup_batch', 'predict', 'get_loss', 'backward', 'step', 'zero_grad')
    order = 5
    def __init__(self): self.seen = []
    def __getattr__(self, name):
        if name in Record.events: return lambda learn: self.seen.append((name, learn.training) if 'epoch' in name else name)
        raise AttributeError(name)


# --- events and cancellation -------------------------------------------------------------------------------------

def test_event_order_for_one_epoch(toy_dls, toy_model):
    dls = toy_dls(n_train=32, n_valid=16, bs=16)
    rec = Record()
    Learner(toy_model(), dls, cbs=[TrainCB(), rec]).fit(1)
    train_batch = ['before_batch', 'predict', 'get_loss', 'backward', 'step', 'zero_grad', 'after_batch', 'cleanup_batch']
    valid_batch = ['before_batch', 'predict', 'get_loss', 'after_batch', 'cleanup_batch']
    assert rec.seen == (['before_fit', ('before_epoch', True)] + train_batch*2 + [('after_epoch', True), ('cleanup_epoch', True),
                        ('before_epoch', False)] + valid_batch + [('after_epoch', False), ('cleanup_epoch', False), 'after_fit', 'cleanup_fit'])


def test_callbacks_run_in_order_and_fit_cbs_are_temporary(toy_dls, toy_model):
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


def test_cancel_batch_skips_the_rest_of_that_batch_only(toy_dls, toy_model, raise_at):
    dls = toy_dls(n_train=48, n_valid=16, bs=16)
    rec = Record()
    Learner(toy_model(), dls, cbs=[TrainCB(), raise_at('predict', CancelBatchException, nth=2), rec]).fit(1)
    # Raise (order 0) runs before Record (order 5): the cancelled batch never reaches Record's predict or after_batch
    assert rec.seen.count('predict') == 3 and rec.seen.count('step') == 2 and rec.seen.count('after_batch') == 3
    assert rec.seen.count('cleanup_batch') == 4 and 'after_fit' in rec.seen


def test_cancel_epoch_ends_the_pass_and_fit_goes_on(toy_dls, toy_model, raise_at):
    dls = toy_dls(n_train=48, n_valid=32, bs=16)
    rec = Record()
    Learner(toy_model(), dls, cbs=[TrainCB(), raise_at('after_batch', CancelEpochException), rec]).fit(2)
    assert rec.seen.count('predict') == 1 + 2 + 3 + 2  # only the first pass of all is cut short, after its first batch
    assert ('after_epoch', True) in rec.seen and rec.seen.count(('cleanup_epoch', True)) == 2 and 'after_fit' in rec.seen


def test_cancel_fit_skips_remaining_epochs_and_after_fit_but_runs_cleanup(toy_dls, toy_model, raise_at):
    rec = Record()
    Learner(toy_model(), toy_dls(bs=16), cbs=[TrainCB(), raise_at('before_batch', CancelFitException, nth=10), rec]).fit(5)
    assert rec.seen.count('predict') == 9 and 'after_fit' not in rec.seen and rec.seen[-1] == 'cleanup_fit'


def test_other_errors_propagate_after_cleanup(toy_dls, toy_model, raise_at):
    rec = Record()
    with pytest.raises(KeyError):
        Learner(toy_model(), toy_dls(), cbs=[TrainCB(), raise_at('step', KeyError, nth=3), rec]).fit(1)
    assert rec.seen[-3:] == ['cleanup_batch', ('cleanup_epoch', True), 'cleanup_fit']


# --- the training step ---------------------------------------------------------------------------------------------

def test_learner_trains_exactly_like_a_plain_loop(toy_dls, toy_model):
    dls1, dls2 = toy_dls(seed=3), toy_dls(seed=3)
    m1, m2 = toy_model(1), toy_model(1)
    Learner(m1, dls1, lr=0.3, cbs=[TrainCB(), DeviceCB('cpu')]).fit(2)
    opt = torch.optim.SGD(m2.parameters(), lr=0.3)
    for _ in range(2):
        for xb, yb in dls2.train:
            F.cross_entropy(m2(xb), yb).backward(); opt.step(); opt.zero_grad()
    for p1, p2 in zip(m1.parameters(), m2.parameters()): torch.testing.assert_close(p1, p2, rtol=0, atol=0)


def test_validation_does_not_train_and_uses_eval_mode(toy_dls):
    model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 4))
    modes = []
    class Mode(Callback):
        def before_batch(self, learn): modes.append((learn.training, learn.model.training, torch.is_grad_enabled()))
    before = [p.detach().clone() for p in model.parameters()]
    Learner(model, toy_dls(n_train=16, n_valid=16), cbs=[TrainCB(), Mode()]).fit(1, train=False)
    assert modes == [(False, False, False)]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_multiple_inputs_and_true_batch_size_in_metrics(quiet):
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


def test_metricscb_matches_a_direct_evaluation(toy_dls, toy_model, quiet):
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


def test_metricscb_prints_rows_and_progresscb_puts_them_in_its_table(capsys, toy_dls, toy_model):
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


def test_progresscb_without_metrics_and_fit_only_valid(toy_dls, toy_model):
    learn = Learner(toy_model(), toy_dls(), cbs=[TrainCB(), ProgressCB(plot=True)])
    learn.fit(1)
    learn = Learner(toy_model(), toy_dls(), cbs=[TrainCB(), MetricsCB(), ProgressCB()])
    learn.fit(1, train=False)
    assert set(learn.metrics.hist[0]) == {'epoch', 'valid_loss', 'time'}


# --- seeds ---------------------------------------------------------------------------------------------------------

def _seeded_cnn_fit(seed, quiet):
    set_seed(seed)
    model = nn.Sequential(conv(1, 4), conv(4, 8), conv(8, 16), conv(16, 10, act=False), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    learn = Learner(model, fashion_dls(bs=32, n_train=96, n_valid=64, seed=seed), lr=0.2, cbs=[TrainCB(), DeviceCB(), quiet(Accuracy())])
    learn.fit(2)
    return [{k: v for k, v in r.items() if k != 'time'} for r in learn.metrics.hist]


def test_two_seeded_fits_give_identical_metrics(quiet):
    a, b, c = _seeded_cnn_fit(11, quiet), _seeded_cnn_fit(11, quiet), _seeded_cnn_fit(12, quiet)
    assert a == b
    assert a != c  # the seed matters, so the equality above is not trivial


def test_set_seed_seeds_random_numpy_and_torch():
    set_seed(5); r1 = (random.random(), np.random.rand(), torch.rand(1).item())
    set_seed(5); r2 = (random.random(), np.random.rand(), torch.rand(1).item())
    assert r1 == r2
    set_seed(-3); r3 = torch.rand(1).item()
    set_seed(-3); assert torch.rand(1).item() == r3 != r1[2]
    set_seed(np.int64(5)); assert (random.random(), np.random.rand(), torch.rand(1).item()) == r1  # a numpy integer seed


def test_set_seed_leaves_deterministic_mode_alone_unless_told():
    was = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        set_seed(5); assert torch.are_deterministic_algorithms_enabled()  # the user's choice stays
        set_seed(5, deterministic=False); assert not torch.are_deterministic_algorithms_enabled()
        set_seed(5); assert not torch.are_deterministic_algorithms_enabled()
        set_seed(5, deterministic=True); assert torch.are_deterministic_algorithms_enabled()
    finally: torch.use_deterministic_algorithms(was)


@pytest.mark.parametrize('kw,exc,match', [(dict(seed=1.5), TypeError, 'seed must be a whole number'),
    (dict(seed=True), TypeError, 'seed must be a whole number'), (dict(seed='1'), TypeError, 'whole number'),
    (dict(seed=2**70), ValueError, 'seed must be from'), (dict(seed=1, deterministic='yes'), TypeError, 'True or False')])
def test_set_seed_errors(kw, exc, match):
    with pytest.raises(exc, match=match): set_seed(**kw)


# --- LR finder -----------------------------------------------------------------------------------------------------

def test_lr_finder_grows_lr_geometrically_stops_on_explosion_and_restores_the_model(toy_dls, toy_model):
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


def test_lr_finder_stops_at_max_lr(toy_dls, toy_model):
    cb = Learner(toy_model(), toy_dls(n_train=64, bs=16), cbs=[TrainCB()]).lr_find(start_lr=1e-6, gamma=2, max_lr=1e-3, plot=False)
    assert cb.lrs[-1] <= 1e-3 < cb.lrs[-1]*2 and len(cb.lrs) == 10  # 1e-6 * 2**9 = 5.1e-4, and the next rate would pass 1e-3


# --- checkpoints ---------------------------------------------------------------------------------------------------

def test_save_load_round_trip_resumes_identically(tmp_path, toy_dls, toy_model):
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


def test_save_without_opt_and_load_errors(tmp_path, toy_dls, toy_model):
    learn = Learner(toy_model(), toy_dls(), cbs=[TrainCB()])
    learn.fit(1)
    learn.save(tmp_path/'m.pth', with_opt=False)
    assert set(torch.load(tmp_path/'m.pth', weights_only=True)) == {'model'}
    torch.save({'weights': 1}, tmp_path/'other.pth')
    with pytest.raises(DataError, match='not a miniai checkpoint'): learn.load(tmp_path/'other.pth')
    with pytest.raises(DataError, match='another architecture.*size mismatch'): Learner(toy_model(n_out=3), toy_dls()).load(tmp_path/'m.pth')


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

def test_fit_without_data_says_what_to_pass(toy_dls, toy_model):
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
def test_output_that_does_not_fit_the_loss_is_one_clear_error(toy_dls):
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


# --- cleanup, whatever happens -------------------------------------------------------------------------------------

def mixed_modes(model):
    "The model in eval mode except its second module: a mode no fit would leave by itself."
    model.eval(); model[1].train()
    return [m.training for m in model.modules()]


@pytest.mark.parametrize('stop', [None, CancelFitException, CancelEpochException, KeyError])
def test_fit_puts_every_module_back_in_its_mode(toy_dls, toy_model, raise_at, stop):
    model = toy_model()
    modes = mixed_modes(model)
    cbs = [TrainCB()] + ([raise_at('after_batch', stop, nth=2)] if stop else [])
    learn = Learner(model, toy_dls(), cbs=cbs)
    if stop is KeyError:
        with pytest.raises(KeyError): learn.fit(2)
    else: learn.fit(2)
    assert [m.training for m in model.modules()] == modes


def test_a_cancelled_validation_pass_gets_a_marked_row_with_what_it_saw(toy_dls, toy_model, quiet, raise_at):
    dls, model = toy_dls(n_valid=48, bs=16), toy_model()
    cut = raise_at('after_batch', CancelEpochException, nth=1, training=False); cut.order = 20  # after MetricsCB added it
    seen = []
    class Keep(Callback):
        order = 15  # after MetricsCB, before the cut
        def after_batch(self, learn):
            if not learn.training: seen.append((learn.preds.detach(), learn.batch[1], learn.loss.item()))
    learn = Learner(model, dls, lr=0.1, cbs=[TrainCB(), quiet(Accuracy()), Keep(), cut])
    learn.fit(2)
    h = learn.metrics.hist
    assert [r['epoch'] for r in h] == [0, 1] and h[0]['partial'] == ['valid'] and 'partial' not in h[1]
    assert set(h[0]) - {'partial'} == set(h[1])  # every row has the same keys
    preds, y, loss = seen[0]  # the one validation batch of epoch 0 that ran
    assert h[0]['valid_loss'] == pytest.approx(loss) and h[0]['valid_accuracy'] == pytest.approx((preds.argmax(1) == y).float().mean().item())
    assert len(seen) == 1 + 3 and not math.isnan(h[1]['valid_loss'])


def test_a_cancelled_fit_leaves_a_complete_marked_row_and_no_half_row(toy_dls, toy_model, quiet, raise_at):
    learn = Learner(toy_model(), toy_dls(), cbs=[TrainCB(), quiet(Accuracy()), raise_at('before_batch', CancelFitException, nth=10, training=True)])
    learn.fit(3)  # 7 training batches per epoch: the 10th batch is the 3rd of epoch 1's training pass
    h = learn.metrics.hist
    assert [r['epoch'] for r in h] == [0, 1] and h[1]['partial'] == ['train', 'valid'] and 'partial' not in h[0]
    assert not math.isnan(h[1]['train_loss']) and math.isnan(h[1]['valid_loss']) and math.isnan(h[1]['valid_accuracy'])
    assert list(h[1])[:-1] == list(h[0])  # same keys, same order, then `partial`
    assert learn.metrics.row is None
    learn.fit(1)  # the next fit starts clean
    assert [r['epoch'] for r in learn.metrics.hist] == [0] and 'partial' not in learn.metrics.hist[0]


def test_an_error_in_the_middle_still_records_the_epoch(toy_dls, toy_model, quiet, raise_at):
    learn = Learner(toy_model(), toy_dls(), cbs=[TrainCB(), quiet(), raise_at('get_loss', KeyboardInterrupt, nth=2, training=False)])
    with pytest.raises(KeyboardInterrupt): learn.fit(2)
    h = learn.metrics.hist
    assert len(h) == 1 and h[0]['partial'] == ['valid'] and not math.isnan(h[0]['valid_loss'])  # one valid batch counted


def test_a_pass_whose_batches_were_all_cancelled_has_nan_values_but_finished(toy_dls, toy_model, quiet, raise_at):
    class SkipValid(Callback):
        def before_batch(self, learn):
            if not learn.training: raise CancelBatchException()
    learn = Learner(toy_model(), toy_dls(), cbs=[TrainCB(), quiet(Accuracy()), SkipValid()])
    learn.fit(1)
    r = learn.metrics.hist[0]
    assert math.isnan(r['valid_loss']) and math.isnan(r['valid_accuracy']) and 'partial' not in r


@pytest.mark.parametrize('stop', [None, CancelFitException, KeyError])
def test_progresscb_gives_metricscb_its_log_back(toy_dls, toy_model, raise_at, stop, capsys):
    metrics = MetricsCB(Accuracy())
    log = metrics.log
    cbs = [TrainCB(), metrics, ProgressCB()] + ([raise_at('after_batch', stop, nth=3)] if stop else [])
    learn = Learner(toy_model(), toy_dls(), cbs=cbs)
    if stop is KeyError:
        with pytest.raises(KeyError): learn.fit(2)
    else: learn.fit(2)
    assert metrics.log is log and isinstance(learn.epochs, range)
    assert 'partial' not in capsys.readouterr().out if stop is None else True


def test_progresscb_table_shows_a_partial_row(toy_dls, toy_model, raise_at, capsys):
    learn = Learner(toy_model(), toy_dls(), cbs=[TrainCB(), MetricsCB(), ProgressCB(),
                                                    raise_at('before_batch', CancelFitException, nth=9, training=True)])
    learn.fit(2)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ['epoch', 'train_loss', 'valid_loss', 'time']
    assert lines[-1].split()[0] == '1' and lines[-1].split()[2] == 'nan' and lines[-1].endswith('partial: train,valid')


def test_progresscb_does_not_take_the_log_of_a_metricscb_from_an_earlier_fit(toy_dls, toy_model, capsys):
    learn = Learner(toy_model(), toy_dls(), cbs=[TrainCB()])
    metrics = MetricsCB()
    learn.fit(1, cbs=[metrics]); log = metrics.log
    learn.fit(1, cbs=[ProgressCB()])  # no MetricsCB in this fit: learn.metrics is the old one, and stays untouched
    assert learn.metrics is metrics and metrics.log is log and len(metrics.hist) == 1


def test_every_cleanup_runs_even_if_one_fails(toy_dls, toy_model):
    ran = []
    class Bad(Callback):
        order = 1
        def cleanup_fit(self, learn): ran.append('bad'); raise KeyError('cleanup broke')
    class Good(Callback):
        order = 2
        def cleanup_fit(self, learn): ran.append('good')
    with pytest.raises(KeyError, match='cleanup broke'): Learner(toy_model(), toy_dls(), cbs=[TrainCB(), Bad(), Good()]).fit(1)
    assert ran == ['bad', 'good']
    class Fail(Callback):
        def after_batch(self, learn): raise ValueError('the real problem')
    ran.clear()
    with pytest.warns(RuntimeWarning, match='cleanup broke'):  # the first error is the one raised; the cleanup's is reported
        with pytest.raises(ValueError, match='the real problem'): Learner(toy_model(), toy_dls(), cbs=[TrainCB(), Bad(), Good(), Fail()]).fit(1)
    assert ran == ['bad', 'good']


def test_a_failing_before_fit_is_the_error_seen_and_others_clean_up(toy_dls, toy_model):
    class Refuse(Callback):
        order = 50  # after MetricsCB and ProgressCB have set themselves up
        def before_fit(self, learn): raise ValueError('refused')
    metrics = MetricsCB(); log = metrics.log
    learn = Learner(toy_model(), toy_dls(), cbs=[TrainCB(), metrics, ProgressCB(), Refuse()])
    with pytest.raises(ValueError, match='refused'): learn.fit(1)
    assert metrics.log is log and learn.n_inp is None
    class Early(Callback):
        order = -1  # before everyone: the others' cleanup_fit runs without their before_fit
        def before_fit(self, learn): raise ValueError('early')
    with pytest.raises(ValueError, match='early'): Learner(toy_model(), toy_dls(), cbs=[TrainCB(), MetricsCB(), ProgressCB(), Early()]).fit(1)


# --- the training step: n_inp and loss errors ----------------------------------------------------------------------

def weighted_ce(preds, y, w): return (F.cross_entropy(preds, y, reduction='none') * w).mean()


def test_n_inp_splits_inputs_from_targets_for_the_model_the_loss_and_the_metrics(quiet):
    g = torch.Generator().manual_seed(0)
    x, y, w = torch.randn(20, 3, generator=g), torch.randint(0, 2, (20,), generator=g), torch.rand(20, generator=g)
    batches = [(x[:13], y[:13], w[:13]), (x[13:], y[13:], w[13:])]
    model = nn.Linear(3, 2)
    learn = Learner(model, SimpleNamespace(train=batches, valid=batches), weighted_ce, cbs=[TrainCB(n_inp=1), quiet(Accuracy())])
    learn.fit(1, train=False)
    with torch.no_grad(): preds = model(x)
    row = learn.metrics.hist[0]
    expected = (13*weighted_ce(preds[:13], y[:13], w[:13]) + 7*weighted_ce(preds[13:], y[13:], w[13:])) / 20
    assert row['valid_loss'] == pytest.approx(expected.item(), rel=1e-6)
    assert row['valid_accuracy'] == pytest.approx((preds.argmax(1) == y).float().mean().item())  # against the first target
    assert learn.n_inp is None  # TrainCB told the learner for the fit only
    with pytest.raises(TypeError, match='positional argument'):  # by default (x, y) would be the inputs, w the target
        Learner(nn.Linear(3, 2), SimpleNamespace(train=batches, valid=batches), weighted_ce, cbs=[TrainCB()]).fit(1)


def test_split_batch_and_n_inp_errors():
    x, y = torch.zeros(2, 3), torch.zeros(2)
    assert split_batch((x, y)) == ((x,), (y,)) and split_batch([x, x, y], 2) == ((x, x), (y,)) and split_batch((x,), 1) == ((x,), ())
    with pytest.raises(TypeError, match='a batch must be a tuple'): split_batch(x)
    with pytest.raises(ValueError, match='cannot hold 3 input'): split_batch((x, y), 3)
    with pytest.raises(ValueError, match='cannot hold 0 input'): split_batch((x,))
    with pytest.raises(ValueError, match='n_inp must be at least 1'): TrainCB(n_inp=0)
    with pytest.raises(TypeError, match='n_inp must be a whole number'): TrainCB(n_inp=True)


class OOM(RuntimeError): pass


@pytest.mark.parametrize('err', [
    RuntimeError('CUDA out of memory. Tried to allocate 2.00 GiB; set max_split_size_mb to avoid fragmentation; target size 3'),
    RuntimeError('[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: not enough memory: you tried to allocate 123 bytes.'),
    torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 20.00 MiB'),
    RuntimeError('expected target dtype to be Long or Byte, but got Float'), RuntimeError('my loss has a bug'),
    ValueError('a custom loss checked something else'), IndexError('list index out of range')])
def test_loss_errors_that_are_not_shape_mismatches_go_on_untouched(toy_dls, err):
    def loss(preds, y): raise err
    with pytest.raises(type(err)) as info: Learner(nn.Linear(8, 4), toy_dls(), loss, cbs=[TrainCB()]).fit(1)
    assert info.value is err  # the same exception object, not a translation


def test_loss_type_errors_go_on_untouched(toy_dls):
    with pytest.raises(TypeError, match="must be Tensor, not list"):
        Learner(nn.Linear(8, 4), SimpleNamespace(train=[(torch.randn(4, 8), [0, 1, 2, 3])], valid=None), cbs=[TrainCB()]).fit(1, valid=False)


@pytest.mark.filterwarnings('ignore:Using a target size')
@pytest.mark.parametrize('preds_shape,targ,loss,match', [
    ((4, 5), torch.tensor([0, 1, 7, 2]), F.cross_entropy, r'output \(4, 5\) does not fit loss_func cross_entropy with target \(4,\)'),
    ((4, 10), torch.tensor([0, 1, 2]), F.cross_entropy, 'batch_size'),
    ((4, 10, 3), torch.zeros(4).long(), F.cross_entropy, 'Expected target size'),
    ((4, 10), torch.zeros(4, 3).long(), F.cross_entropy, 'multi-target'),
    ((4, 2), torch.randn(4, 3), F.mse_loss, 'size of tensor a'),
    ((4, 1), torch.rand(4), F.binary_cross_entropy_with_logits, 'must be the same as input size'),
    ((4, 5), torch.tensor([0, 1, 7, 2]), lambda p, y: -p[range(len(y)), y].mean(), 'index 7 is out of bounds')])
def test_shape_size_and_class_index_mismatches_are_one_clear_error(preds_shape, targ, loss, match):
    class Fixed(nn.Module):
        def __init__(self): super().__init__(); self.w = nn.Parameter(torch.zeros(()))
        def forward(self, x): return torch.zeros(preds_shape) + self.w
    with pytest.raises(ValueError, match=match) as info:
        Learner(Fixed(), SimpleNamespace(train=[(torch.zeros(4), targ)], valid=None), loss, cbs=[TrainCB()]).fit(1, valid=False)
    assert "does not fit loss_func" in str(info.value) and info.value.__cause__ is not None


# --- bad arguments -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('kw,exc,match', [
    (dict(n_epochs=-1), ValueError, 'n_epochs must be at least 1, got -1'), (dict(n_epochs=0), ValueError, 'at least 1'),
    (dict(n_epochs=1.5), TypeError, 'n_epochs must be a whole number'), (dict(n_epochs=True), TypeError, 'whole number, got bool'),
    (dict(n_epochs='2'), TypeError, 'whole number'), (dict(valid=1), TypeError, 'valid must be True or False'),
    (dict(lr=-0.1), ValueError, 'lr must be a number >= 0'), (dict(lr='0.1'), TypeError, 'lr must be a number'),
    (dict(cbs=TrainCB()), TypeError, 'cbs must be a list'), (dict(cbs=[ProgressCB]), TypeError, r'call it: ProgressCB\(\)')])
def test_fit_refuses_bad_arguments_before_anything_runs(toy_dls, toy_model, kw, exc, match):
    model = toy_model(); before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(exc, match=match): Learner(model, toy_dls(), cbs=[TrainCB()]).fit(**kw)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_learner_refuses_bad_arguments(toy_dls, toy_model):
    with pytest.raises(TypeError, match='model must be an nn.Module'): Learner(lambda x: x, toy_dls())
    with pytest.raises(TypeError, match='loss_func must be callable'): Learner(toy_model(), toy_dls(), loss_func='mse')
    with pytest.raises(TypeError, match='lr must be a number'): Learner(toy_model(), toy_dls(), lr=True)
    with pytest.raises(TypeError, match=r'call it: TrainCB\(\)'): Learner(toy_model(), toy_dls(), cbs=[TrainCB])
    with pytest.raises(TypeError, match=r'must be Metric objects'): MetricsCB(acc=Accuracy)


# --- loaders without a length, used-up and empty loaders --------------------------------------------------------

class Stream(torch.utils.data.IterableDataset):
    "The batches of a list, streamed: a DataLoader over it has no len()."
    def __init__(self, batches): self.batches = batches
    def __iter__(self): return iter(self.batches)


def stream_dls(dls, valid=True):
    return DataLoaders(torch.utils.data.DataLoader(Stream(list(dls.train)), batch_size=None),
                       torch.utils.data.DataLoader(Stream(list(dls.valid)), batch_size=None) if valid else None)


def test_fit_and_progress_on_loaders_without_a_length(toy_dls, toy_model, quiet):
    dls = stream_dls(toy_dls(shuffle=False))
    with pytest.raises(TypeError): len(dls.train)
    model, ref = toy_model(), toy_model()
    metrics = quiet(Accuracy())
    Learner(model, dls, lr=0.3, cbs=[TrainCB(), metrics, ProgressCB(plot=True)]).fit(2)
    Learner(ref, toy_dls(shuffle=False), lr=0.3, cbs=[TrainCB()]).fit(2)  # the same batches with a length: the same training
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), ref.parameters())) and len(metrics.hist) == 2


def test_lr_find_on_a_loader_without_a_length_stops_by_itself_and_restores(toy_dls, toy_model):
    import matplotlib; matplotlib.use('Agg')
    model = toy_model(); before = [p.detach().clone() for p in model.parameters()]
    learn = Learner(model, stream_dls(toy_dls(n_train=48, bs=16), valid=False), cbs=[TrainCB()])  # 3 batches per epoch
    cb = learn.lr_find(start_lr=1e-4, gamma=2, max_lr=1e-1, plot=False)
    assert len(cb.lrs) == 10 and cb.lrs[-1] == pytest.approx(1e-4 * 2**9)  # over four epochs of 3 batches, stopped at max_lr
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())) and learn.opt is None


def test_an_iterable_loader_that_gives_nothing_is_one_clear_error(toy_model):
    empty = torch.utils.data.DataLoader(Stream([]), batch_size=None)
    with pytest.raises(ValueError, match='dls.train gave no batches in epoch 0'):
        Learner(toy_model(), DataLoaders(empty, None), cbs=[TrainCB(), MetricsCB()]).fit(1, valid=False)


def test_a_one_shot_iterator_as_loader_is_refused(toy_model):
    batches = [(torch.randn(4, 8), torch.zeros(4).long())]
    with pytest.raises(TypeError, match='dls.train is read once per epoch'):
        Learner(toy_model(), SimpleNamespace(train=iter(batches), valid=None), cbs=[TrainCB()]).fit(2, valid=False)


# --- the LR finder restores whatever happens ---------------------------------------------------------------------

def test_lr_finder_restores_weights_optimizer_modes_and_metrics_after_an_error(toy_dls, toy_model, quiet, raise_at):
    model = toy_model(); modes = mixed_modes(model)
    metrics = quiet()
    learn = Learner(model, toy_dls(n_train=256), lr=0.05, cbs=[TrainCB(), metrics],
                    opt_func=lambda ps, lr: torch.optim.SGD(ps, lr, momentum=0.9))
    learn.fit(1); modes = mixed_modes(model)
    opt, hist, cbs = learn.opt, list(metrics.hist), learn.cbs
    group = {k: v for k, v in opt.param_groups[0].items() if k != 'params'}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    learn.cbs.append(raise_at('after_batch', KeyError, nth=5))
    with pytest.raises(KeyError): learn.lr_find(plot=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and [m.training for m in model.modules()] == modes
    assert learn.opt is opt and {k: v for k, v in opt.param_groups[0].items() if k != 'params'} == group
    assert learn.cbs is cbs and metrics.hist == hist  # the finder's run did not touch the metrics of the last fit
    learn.cbs.pop()
    learn.lr_find(plot=False)
    assert metrics.hist == hist and learn.opt is opt


def test_lr_finder_refuses_a_schedule_that_fights_it_and_bad_arguments(toy_dls, toy_model):
    class Schedule(Callback):
        def after_batch(self, learn):
            for g in learn.opt.param_groups: g['lr'] = 0.01
    for order in (-1, 60):  # before the finder, or after it (as a schedule does)
        Schedule.order = order
        learn = Learner(toy_model(), toy_dls(n_train=256), cbs=[TrainCB(), Schedule()])
        with pytest.raises(ValueError, match='another callback changed the learning rate'): learn.lr_find(plot=False)
    learn = Learner(toy_model(), toy_dls(), cbs=[TrainCB()])
    with pytest.raises(ValueError, match=r'start_lr \(1\) must be below max_lr \(0.1\)'): learn.lr_find(start_lr=1, max_lr=0.1)
    with pytest.raises(ValueError, match='gamma must be a number > 1'): learn.lr_find(gamma=1)
    with pytest.raises(ValueError, match='start_lr must be a number > 0'): learn.lr_find(start_lr=0)
    with pytest.raises(TypeError, match='plot must be True or False'): learn.lr_find(plot='yes')


def test_callbacks_refuse_bad_settings():
    with pytest.raises(ValueError, match="DeviceCB: 'gpu' is not a device"): DeviceCB('gpu')
    with pytest.raises(TypeError, match='plot must be True or False'): ProgressCB(plot='yes')
    with pytest.raises(ValueError, match='plot_every must be a number >= 0'): ProgressCB(plot_every=-1)
    with pytest.raises(ValueError, match='gamma must be a number > 1'): LRFinderCB(gamma=0.5)

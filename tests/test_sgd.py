"Tests of miniai.sgd: our optimizers against torch.optim step by step, weight decay, state_dict, 1cycle against OneCycleLR, schedulers and RecorderCB in the Learner, errors."
import math
from functools import partial

import pytest
import torch
from torch import nn

from miniai.datasets import DataLoaders
from miniai.learner import Callback, CancelEpochException, CancelFitException, Learner, MetricsCB, TrainCB
from miniai.sgd import (SGD, Adam, BatchSchedCB, EpochSchedCB, Momentum, OneCycle, OneCycleCB, RecorderCB, RMSProp, ewma,
                        get_mom, one_cycle, set_mom, train_steps)


def toy_params(dtype=torch.float64, n=20):
    "Parameters of sizes from 1e-4 to 10, so that gradients span many orders of magnitude and every term of a formula matters."
    g = torch.Generator().manual_seed(0)
    return (torch.randn(n, generator=g, dtype=dtype) * torch.logspace(-4, 1, n, dtype=dtype)).requires_grad_()


def toy_loss(p): return (torch.logspace(-3, 1, len(p), dtype=p.dtype) * p**2).sum() + 0.1*(p**3).sum()


def run_pair(make_ours, make_torch, n_steps=10, rtol=1e-10, atol=1e-12):
    "Step ours and torch's side by side on the same parameters and loss; assert agreement after every step."
    p1 = toy_params(); p2 = p1.detach().clone().requires_grad_(); p0 = p1.detach().clone()
    ours, theirs = make_ours([p1]), make_torch([p2])
    for _ in range(n_steps):
        for p, opt in ((p1, ours), (p2, theirs)):
            toy_loss(p).backward(); opt.step(); opt.zero_grad()
        torch.testing.assert_close(p1, p2, rtol=rtol, atol=atol)
    assert (p1 - p0).abs().max() > 1e-3  # the parameters really moved: the comparison was not of two idle tensors


ADAM_KW = dict(betas=(0.9, 0.99), eps=1e-5)
M = 0.9
PAIRS = {
    'sgd': (lambda ps: SGD(ps, lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
    'sgd_wd_decoupled': (lambda ps: SGD(ps, lr=0.1, wd=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.1)),
    'sgd_wd_l2': (lambda ps: SGD(ps, lr=0.1, wd=0.1, decouple_wd=False), lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.1)),
    # torch's momentum buffer is a sum (b = m*b + g, b_1 = g), ours an average from 0: equal with our lr = torch's lr / (1-m)
    'momentum': (lambda ps: Momentum(ps, lr=0.1/(1-M), mom=M), lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=M)),
    'momentum_wd_l2': (lambda ps: Momentum(ps, lr=0.1/(1-M), wd=0.1, mom=M, decouple_wd=False),
                       lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=M, weight_decay=0.1)),
    'momentum_0.5': (lambda ps: Momentum(ps, lr=0.05/(1-0.5), mom=0.5), lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.5)),
    'rmsprop': (lambda ps: RMSProp(ps, lr=0.01), lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.99, eps=1e-5)),
    'rmsprop_other': (lambda ps: RMSProp(ps, lr=0.003, sqr_mom=0.9, eps=1e-3), lambda ps: torch.optim.RMSprop(ps, lr=0.003, alpha=0.9, eps=1e-3)),
    'rmsprop_wd_l2': (lambda ps: RMSProp(ps, lr=0.01, wd=0.1, decouple_wd=False),
                      lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.99, eps=1e-5, weight_decay=0.1)),
    'adam': (lambda ps: Adam(ps, lr=0.01), lambda ps: torch.optim.Adam(ps, lr=0.01, **ADAM_KW)),
    'adam_torch_defaults': (lambda ps: Adam(ps, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8), lambda ps: torch.optim.Adam(ps, lr=0.01)),
    'adam_wd_l2': (lambda ps: Adam(ps, lr=0.01, wd=0.1, decouple_wd=False), lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.1, **ADAM_KW)),
    'adamw': (lambda ps: Adam(ps, lr=0.01, wd=0.1), lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1, **ADAM_KW)),
}


@pytest.mark.parametrize('name', list(PAIRS))
def test_matches_torch_step_by_step(name):
    run_pair(*PAIRS[name])


MISMATCHES = {
    # torch's dampening=m still starts its buffer at the first gradient undamped: not our average from 0
    'momentum_vs_dampening': (lambda ps: Momentum(ps, lr=0.1, mom=M), lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=M, dampening=M)),
    # with momentum, decoupled decay is not L2
    'momentum_decoupled_vs_l2': (lambda ps: Momentum(ps, lr=1.0, wd=0.1, mom=M), lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=M, weight_decay=0.1)),
    'adam_decoupled_vs_adam_l2': (lambda ps: Adam(ps, lr=0.01, wd=0.1), lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.1, **ADAM_KW)),
    'adam_l2_vs_adamw': (lambda ps: Adam(ps, lr=0.01, wd=0.1, decouple_wd=False), lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1, **ADAM_KW)),
    # a slightly different eps must be detected: the test problem has gradients near eps
    'adam_other_eps': (lambda ps: Adam(ps, lr=0.01, eps=2e-5), lambda ps: torch.optim.Adam(ps, lr=0.01, **ADAM_KW)),
    'adam_other_beta2': (lambda ps: Adam(ps, lr=0.01, beta2=0.999), lambda ps: torch.optim.Adam(ps, lr=0.01, **ADAM_KW)),
    'rmsprop_other_sqr_mom': (lambda ps: RMSProp(ps, lr=0.01, sqr_mom=0.9), lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.99, eps=1e-5)),
}


@pytest.mark.parametrize('name', list(MISMATCHES))
def test_check_detects_differences(name):
    "The step-by-step comparison is sensitive enough to tell apart formulas that differ on purpose (or by a small setting)."
    with pytest.raises(AssertionError): run_pair(*MISMATCHES[name])


class AdamEpsInside(Adam):
    def opt_step(self, p, grad, state, group):
        if 'grad_avg' not in state: state['grad_avg'], state['sqr_avg'] = torch.zeros_like(p), torch.zeros_like(p)
        b1, b2, t = group['beta1'], group['beta2'], state['step']
        avg = state['grad_avg'].mul_(b1).add_(grad, alpha=1 - b1)
        sqr = state['sqr_avg'].mul_(b2).addcmul_(grad, grad, value=1 - b2)
        p.addcdiv_(avg / (1 - b1**t), (sqr / (1 - b2**t) + group['eps']).sqrt(), value=-group['lr'])


def test_eps_placement_is_detected():
    with pytest.raises(AssertionError): run_pair(lambda ps: AdamEpsInside(ps, lr=0.01), lambda ps: torch.optim.Adam(ps, lr=0.01, **ADAM_KW))


@pytest.fixture
def toy_model(toy_model):
    "conftest's toy model with 6 inputs, two hidden layers of 16 and 3 outputs: Linear layers at 0, 2 and 4."
    return partial(toy_model, n_in=6, n_out=3, depth=2)


@pytest.fixture
def toy_dls(toy_dls):
    "conftest's toy data with 6 inputs and 3 classes; 7 training batches of 16 (the last one smaller)."
    return partial(toy_dls, n_in=6, n_out=3)


@pytest.mark.parametrize('ours,theirs', [
    (partial(Adam, wd=0.01), partial(torch.optim.AdamW, weight_decay=0.01, **ADAM_KW)),
    (partial(Momentum, mom=0.8), None),
    (RMSProp, partial(torch.optim.RMSprop, alpha=0.99, eps=1e-5)),
])
def test_model_with_groups_and_frozen_params(ours, theirs, toy_model):
    "A real model in float32: two parameter groups with different lrs, one parameter without a gradient (left alone, no state)."
    lr = 1e-2
    if theirs is None: theirs, lr_t = partial(torch.optim.SGD, momentum=0.8), lambda lr: lr*(1 - 0.8)  # momentum: convert lr
    else: lr_t = lambda lr: lr
    m1, m2 = toy_model(), toy_model()
    for m in (m1, m2): m[0].bias.requires_grad_(False)
    def groups(m, conv): return [{'params': [m[0].weight, m[2].weight, m[2].bias]}, {'params': [m[4].weight, m[4].bias], 'lr': conv(lr/10)}]
    o1, o2 = ours(groups(m1, lambda x: x), lr=lr), theirs(groups(m2, lr_t), lr=lr_t(lr))
    g = torch.Generator().manual_seed(1)
    for _ in range(10):
        x, y = torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
        for m, o in ((m1, o1), (m2, o2)):
            nn.functional.cross_entropy(m(x), y).backward(); o.step(); o.zero_grad()
    for a, b in zip(m1.parameters(), m2.parameters()): torch.testing.assert_close(a, b)
    assert torch.equal(m1[0].bias, toy_model()[0].bias) and m1[0].bias not in o1.state  # the frozen bias never moved
    assert o1.state[m1[0].weight]['step'] == 10


def test_no_grad_params_and_grads_untouched():
    "L2 weight decay must not write into p.grad; parameters without a gradient are skipped."
    p, q = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
    opt = Adam([p, q], lr=0.1, wd=0.5, decouple_wd=False)
    (p**2).sum().backward()
    g = p.grad.clone(); opt.step()
    assert torch.equal(p.grad, g) and torch.equal(q.detach(), torch.ones(2)) and q not in opt.state


def test_sgd_hand_computed():
    w = torch.tensor([1., -2., 3.], requires_grad=True)
    opt = SGD([w], lr=0.1, wd=0.5)  # decoupled: w*(1 - 0.05) - 0.1*2w = 0.75 w
    (w**2).sum().backward(); opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([0.75, -1.5, 2.25]))


def test_state_dict_roundtrip_resumes_exactly(tmp_path, toy_model):
    "Save the optimizer state mid-training (through Learner.save/load, weights_only), load into fresh copies, continue: identical."
    m1 = toy_model(); o1 = Adam(m1.parameters(), lr=1e-2, wd=0.1)
    g = torch.Generator().manual_seed(2)
    data = [(torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(8)]
    def train(m, o, batches):
        for x, y in batches: nn.functional.cross_entropy(m(x), y).backward(); o.step(); o.zero_grad()
    train(m1, o1, data[:4])
    learn = Learner(m1, None, opt_func=Adam); learn.opt = o1
    learn.save(tmp_path/'ck.pth')
    learn2 = Learner(toy_model(seed=5), None, lr=1e-2, opt_func=partial(Adam, wd=0.1)).load(tmp_path/'ck.pth')
    assert learn2.opt.state_dict()['state'][0]['step'] == 4
    train(m1, o1, data[4:]); train(learn2.model, learn2.opt, data[4:])
    for a, b in zip(m1.parameters(), learn2.model.parameters()): assert torch.equal(a, b)


# ---- 1cycle -------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('total,pct,div,fdiv', [(10, 0.3, 25., 1e4), (100, 0.25, 25., 1e4), (37, 0.3, 10., 100.), (1000, 0.1, 25., 1e4), (7, 0.5, 5., 10.)])
@pytest.mark.parametrize('torch_opt', ['sgd', 'adam'])
def test_onecycle_matches_torch(total, pct, div, fdiv, torch_opt):
    "lr and momentum (torch SGD's `momentum`, or Adam's `betas[0]`) equal OneCycleLR's at every step, for both param groups."
    def make():
        a, b = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
        groups = [{'params': [a]}, {'params': [b]}]
        return torch.optim.SGD(groups, lr=0.1, momentum=0.9) if torch_opt == 'sgd' else torch.optim.Adam(groups, lr=0.1)
    o1, o2 = make(), make()
    max_lr = [0.1, 0.03]
    ours = OneCycle(o1, max_lr, total, pct_start=pct, div_factor=div, final_div_factor=fdiv)
    theirs = torch.optim.lr_scheduler.OneCycleLR(o2, max_lr, total_steps=total, pct_start=pct, div_factor=div, final_div_factor=fdiv)
    seen_lrs = []
    for i in range(total + 1):
        if i: o1.step(); o2.step(); ours.step(); theirs.step()
        for g1, g2 in zip(o1.param_groups, o2.param_groups):
            assert math.isclose(g1['lr'], g2['lr'], rel_tol=1e-12, abs_tol=1e-15), (i, g1['lr'], g2['lr'])
            assert math.isclose(get_mom(g1), get_mom(g2), rel_tol=1e-12), (i, get_mom(g1), get_mom(g2))
        seen_lrs.append(o1.param_groups[0]['lr'])
    assert seen_lrs[0] == pytest.approx(0.1/div) and max(seen_lrs) == pytest.approx(0.1, rel=0.05) and seen_lrs[total-1] == pytest.approx(0.1/div/fdiv)
    assert ours.get_last_lr() == [g['lr'] for g in o1.param_groups]
    with pytest.raises(ValueError, match='total_steps'): ours.step()


def test_one_cycle_shape():
    lrs, moms = zip(*[one_cycle(i, 100, 1.0) for i in range(100)])
    peak = lrs.index(max(lrs))
    assert 27 <= peak <= 30 and all(a < b for a, b in zip(lrs[:peak], lrs[1:peak+1])) and all(a > b for a, b in zip(lrs[peak:-1], lrs[peak+1:]))
    assert moms[0] == pytest.approx(0.95) and min(moms) == pytest.approx(0.85, abs=1e-3) and moms[-1] == pytest.approx(0.95)


def test_onecycle_errors():
    opt = RMSProp([torch.zeros(2, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match='no momentum.*moms=None'): OneCycle(opt, 0.1, 10)
    OneCycle(opt, 0.1, 10, moms=None)  # the lr alone can be scheduled
    with pytest.raises(ValueError, match='max_lr values for 1'): OneCycle(opt, [0.1, 0.2], 10, moms=None)
    with pytest.raises(ValueError, match='pct_start'): OneCycle(opt, 0.1, 10, pct_start=1.5, moms=None)


def test_get_set_mom():
    g = {'betas': (0.9, 0.99)}; set_mom(g, 0.8); assert g['betas'] == (0.8, 0.99) and get_mom(g) == 0.8
    g = {'mom': 0.9}; set_mom(g, 0.7); assert get_mom(g) == 0.7
    assert math.isnan(get_mom({'lr': 0.1}))
    with pytest.raises(ValueError, match='no momentum'): set_mom({'lr': 0.1, 'params': []}, 0.9)


# ---- schedulers and RecorderCB in the Learner -----------------------------------------------------------------------------

def two_groups(opt_cls, **kw):
    def f(params, lr):
        ps = list(params)
        return opt_cls([{'params': ps[:-2]}, {'params': ps[-2:], 'lr': lr/10}], lr=lr, **kw)
    return f


def test_recorder_one_value_per_batch_with_onecycle(toy_dls, toy_model):
    dls = toy_dls(); n_epochs = 2; n = n_epochs * len(dls.train)
    rec = RecorderCB()
    learn = Learner(toy_model(), dls, lr=0.05, opt_func=Adam, cbs=[TrainCB(), rec, BatchSchedCB(partial(OneCycle, max_lr=0.05, total_steps=n))])
    learn.fit(n_epochs)
    assert {k: len(v) for k, v in rec.recs.items()} == {'lr': n, 'mom': n, 'loss': n}  # training batches only, not validation
    # recorded before the scheduler moved on: batch i was trained with the schedule's value at step i
    for i in range(n):
        lr, mom = one_cycle(i, n, 0.05)
        assert rec.recs['lr'][i] == pytest.approx(lr, rel=1e-12) and rec.recs['mom'][i] == pytest.approx(mom, rel=1e-12)
    assert learn.opt.param_groups[0]['beta1'] == 0.9 and learn.opt.param_groups[0]['lr'] == 0.05  # Adam's own, again
    axs = rec.plot(smooth=0.9); assert len(axs) == 3
    with pytest.raises(ValueError, match='nothing recorded'): rec.plot(['acc'])


def test_recorder_custom_getters(toy_dls, toy_model):
    rec = RecorderCB(lr1=lambda l: l.opt.param_groups[1]['lr'], it=lambda l: l.iter)
    Learner(toy_model(), toy_dls(), lr=0.1, opt_func=two_groups(SGD), cbs=[TrainCB(), rec]).fit(2)
    assert rec.recs['it'] == list(range(7))*2 and rec.recs['lr1'] == [pytest.approx(0.01)]*14


@pytest.mark.parametrize('opt_cls', [SGD, Momentum, Adam])
def test_batch_sched_changes_every_group(opt_cls, toy_dls, toy_model):
    dls = toy_dls()
    cb = BatchSchedCB(partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5))
    rec = RecorderCB(lr0=lambda l: l.opt.param_groups[0]['lr'], lr1=lambda l: l.opt.param_groups[1]['lr'])
    learn = Learner(toy_model(), dls, lr=0.1, opt_func=two_groups(opt_cls), cbs=[TrainCB(), rec, cb])
    learn.fit(1)
    nb = len(dls.train)
    assert rec.recs['lr0'] == [pytest.approx(0.1 * 0.5**i) for i in range(nb)]
    assert rec.recs['lr1'] == [pytest.approx(0.01 * 0.5**i) for i in range(nb)]
    assert [g['lr'] for g in learn.opt.param_groups] == [0.1, 0.01]  # the schedule was for that fit only


def test_onecycle_changes_every_group_in_learner(toy_dls, toy_model):
    dls = toy_dls(); n = len(dls.train)
    rec = RecorderCB(lr0=lambda l: l.opt.param_groups[0]['lr'], lr1=lambda l: l.opt.param_groups[1]['lr'],
                     m1=lambda l: get_mom(l.opt.param_groups[1]))
    learn = Learner(toy_model(), dls, lr=0.1, opt_func=two_groups(Momentum), cbs=[TrainCB(), rec, BatchSchedCB(partial(OneCycle, max_lr=[0.1, 0.02], total_steps=n))])
    learn.fit(1)
    for i in range(n):
        assert rec.recs['lr0'][i] == pytest.approx(one_cycle(i, n, 0.1)[0]) and rec.recs['lr1'][i] == pytest.approx(one_cycle(i, n, 0.02)[0])
        assert rec.recs['m1'][i] == pytest.approx(one_cycle(i, n, 0.1)[1])


def test_epoch_sched_steps_once_per_training_epoch(toy_dls, toy_model):
    rec = RecorderCB(lr=lambda l: l.opt.param_groups[0]['lr'])
    learn = Learner(toy_model(), toy_dls(), lr=0.1, opt_func=Adam,
                    cbs=[TrainCB(), rec, EpochSchedCB(partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.1))])
    learn.fit(3)  # validation passes must not step it
    assert rec.recs['lr'] == [pytest.approx(0.1)]*7 + [pytest.approx(0.01)]*7 + [pytest.approx(0.001)]*7


@pytest.mark.parametrize('opt_func,lr', [(SGD, 0.2), (Momentum, 0.5), (RMSProp, 3e-3), (Adam, 1e-2)])
def test_each_optimizer_trains_in_learner(opt_func, lr, toy_dls, toy_model):
    torch.manual_seed(0)
    metrics = MetricsCB(); metrics.log = lambda row: None
    Learner(toy_model(), toy_dls(n_train=320), lr=lr, opt_func=opt_func, cbs=[TrainCB(), metrics]).fit(4)
    h = metrics.hist
    assert h[-1]['train_loss'] < 0.7 * h[0]['train_loss'] and h[-1]['valid_loss'] < h[0]['valid_loss']


# ---- ewma and errors --------------------------------------------------------------------------------------------------------

def test_ewma():
    xs = [3., 1., 4., 1., 5., 9., 2., 6.]
    b = 0.8
    raw = ewma(xs, b, debias=False)
    for t in range(1, len(xs) + 1):  # the closed form: (1-b) * sum_k b^k x_{t-k}
        assert raw[t-1] == pytest.approx((1 - b) * sum(b**k * xs[t-1-k] for k in range(t)))
    assert ewma(xs, b)[3] == pytest.approx(raw[3] / (1 - b**4))
    assert ewma([7.]*30, 0.99) == [pytest.approx(7.)]*30
    with pytest.raises(ValueError, match='beta'): ewma(xs, 1.0)


@pytest.mark.parametrize('make,exc,match', [
    (lambda ps: SGD(ps, lr=-0.1), ValueError, 'SGD: lr must be a number >= 0'),
    (lambda ps: SGD(ps, lr='0.1'), ValueError, 'lr must be a number'),
    (lambda ps: Adam(ps, lr=0.1, wd=-1), ValueError, 'Adam: wd'),
    (lambda ps: Momentum(ps, lr=0.1, mom=1.0), ValueError, 'Momentum: mom must be a number >= 0.0 and < 1'),
    (lambda ps: RMSProp(ps, lr=0.1, eps=0), ValueError, 'RMSProp: eps must be a number > 0'),
    (lambda ps: Adam(ps, lr=0.1, beta2=1.5), ValueError, 'Adam: beta2'),
    (lambda ps: Adam(ps[0], lr=0.1), TypeError, 'wrap it in a list'),
    (lambda ps: Adam(iter([]), lr=0.1), ValueError, 'got no parameters'),
])
def test_errors(make, exc, match):
    with pytest.raises(exc, match=match): make([torch.zeros(2, requires_grad=True)])


# ---- schedules last one fit: the optimizer's hyper-parameters come back, however the fit ends ------------------------

def hypers(opt): return [{k: v for k, v in g.items() if k != 'params'} for g in opt.param_groups]

SCHEDS = {
    'onecycle': lambda n: BatchSchedCB(partial(OneCycle, max_lr=0.05, total_steps=n)),
    'torch_onecycle': lambda n: BatchSchedCB(partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.05, total_steps=n)),
    'torch_step_epoch': lambda n: EpochSchedCB(partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.1)),
    'onecyclecb': lambda n: OneCycleCB(0.05),
}


@pytest.mark.parametrize('sched', list(SCHEDS))
@pytest.mark.parametrize('stop', [None, CancelFitException, CancelEpochException, KeyError])
def test_a_schedule_puts_the_hyper_parameters_back_when_the_fit_ends(sched, stop, toy_dls, toy_model, raise_at):
    dls = toy_dls(); n = 2 * len(dls.train)
    opt_func = lambda ps, lr: torch.optim.SGD(ps, lr, momentum=0.9)  # torch's OneCycleLR schedules momentum too
    learn = Learner(toy_model(), dls, lr=0.3, opt_func=opt_func, cbs=[TrainCB()])
    learn.fit(1)  # the optimizer exists, with its own lr and momentum
    before = hypers(learn.opt)
    rec = RecorderCB(lr=lambda l: l.opt.param_groups[0]['lr'])
    cbs = [rec, SCHEDS[sched](n)] + ([raise_at('after_batch', stop, nth=4, training=True)] if stop else [])
    if stop is KeyError:
        with pytest.raises(KeyError): learn.fit(2, cbs=cbs)
    else: learn.fit(2, cbs=cbs)
    assert any(lr != 0.3 for lr in rec.recs['lr'][1:]) or sched == 'torch_step_epoch'  # the schedule did change the lr
    assert hypers(learn.opt) == before  # lr, momentum back, and no `initial_lr`, `max_lr`... left by torch's schedulers
    learn.fit(1, cbs=[rec])
    assert set(rec.recs['lr']) == {0.3}  # the next fit trains at the optimizer's own rate


def test_a_schedule_restores_tensor_learning_rates_too(toy_dls, toy_model):
    learn = Learner(toy_model(), toy_dls(), opt_func=lambda ps, lr: torch.optim.SGD(ps, lr=torch.tensor(0.1)), cbs=[TrainCB()])
    learn.fit(1, cbs=[BatchSchedCB(partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5))])
    assert learn.opt.param_groups[0]['lr'].item() == pytest.approx(0.1)


def test_onecyclecb_reads_the_length_from_the_learner(toy_dls, toy_model):
    dls = toy_dls()
    for n_epochs, valid in ((1, True), (3, False)):
        rec = RecorderCB()
        learn = Learner(toy_model(), dls, opt_func=Adam, cbs=[TrainCB(), rec])
        learn.fit(n_epochs, valid=valid, cbs=[cb := OneCycleCB(0.05)])
        n = n_epochs * len(dls.train)
        assert cb.sched.total_steps == n == len(rec.recs['lr']) and cb.sched.last_step == n  # stepped exactly to the end
        assert rec.recs['lr'] == [pytest.approx(one_cycle(i, n, 0.05)[0], rel=1e-12) for i in range(n)]
    learn.fit(1, train=False, cbs=[cb := OneCycleCB(0.05)])  # validation only: nothing to schedule
    assert cb.sched is None


def test_fit_one_cycle_record_comes_from_this_fit(toy_dls, toy_model, quiet):
    learn = Learner(toy_model(), toy_dls(), opt_func=Adam, cbs=[TrainCB()])
    old = quiet(); learn.fit(2, cbs=[old])
    rec = learn.fit_one_cycle(2, lr=0.02)
    assert rec['hist'] == [] and rec['epochs'] == 2 and rec['lr'] == 0.02 and rec['minutes'] > 0  # not the old MetricsCB's rows
    rec = learn.fit_one_cycle(1, lr=0.02, cbs=[new := quiet()], valid=False)
    assert rec['hist'] == new.hist and set(rec['hist'][0]) == {'epoch', 'train_loss', 'time'}
    learn.cbs.append(quiet())
    assert len(learn.fit_one_cycle(3)['hist']) == 3 and learn.fit_one_cycle(3)['lr'] == learn.lr


def test_onecyclecb_on_a_loader_without_length_and_other_bad_fits_are_clear_errors(toy_dls, toy_model):
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self): return iter([(torch.randn(4, 6), torch.zeros(4).long())] * 3)
    stream = torch.utils.data.DataLoader(Stream(), batch_size=None)
    learn = Learner(toy_model(), DataLoaders(stream, None), opt_func=Adam, cbs=[TrainCB()])
    learn.fit(1, valid=False); before = hypers(learn.opt)
    with pytest.raises(ValueError, match=r'training loader \(DataLoader\) has no length'): learn.fit_one_cycle(1, valid=False)
    assert hypers(learn.opt) == before
    with pytest.raises(ValueError, match=r'has no length'): train_steps(learn)
    one = Learner(toy_model(), DataLoaders([(torch.randn(4, 6), torch.zeros(4).long())], None), opt_func=Adam, cbs=[TrainCB()])
    with pytest.raises(ValueError, match='this fit has 1 training batch; 1cycle needs at least 2'): one.fit_one_cycle(1, valid=False)
    with pytest.raises(ValueError, match='OneCycleCB: max_lr must be a number > 0'): OneCycleCB(-0.1)
    with pytest.raises(TypeError, match='cbs must be a list'): learn.fit_one_cycle(1, cbs=TrainCB())
    with pytest.raises(ValueError, match='n_epochs must be at least 1'): learn.fit_one_cycle(0)


@pytest.mark.parametrize('kw,match', [(dict(pct_start='0.3'), 'pct_start'), (dict(pct_start=0), 'pct_start'),
    (dict(max_lr=0), 'max_lr must be a number > 0'), (dict(max_lr=[0.1, -1]), 'max_lr values for 1'),
    (dict(total_steps=True), 'total_steps'), (dict(total_steps=5.0), 'total_steps'), (dict(div_factor=0), 'div_factor'),
    (dict(final_div_factor=-1), 'final_div_factor'), (dict(moms=(0.9, 0.8)), 'three momentums'), (dict(moms=(0.9, 1.2, 0.9)), 'moms')])
def test_onecycle_refuses_bad_settings(kw, match):
    opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=match): OneCycle(opt, **{'max_lr': 0.1, 'total_steps': 10, **kw})


def test_recorder_keeps_whole_rows_and_says_what_is_wrong(toy_dls, toy_model):
    calls = []
    def flaky(learn):
        calls.append(1)
        if len(calls) == 3: raise KeyError('getter broke')
        return 1.
    rec = RecorderCB(lr=lambda l: l.opt.param_groups[0]['lr'], flaky=flaky)
    with pytest.raises(KeyError): Learner(toy_model(), toy_dls(), cbs=[TrainCB(), rec]).fit(1)
    assert len(rec.recs['lr']) == len(rec.recs['flaky']) == 2  # the failing batch left no half row
    with pytest.raises(ValueError, match='nothing recorded yet'): RecorderCB().plot()
    with pytest.raises(TypeError, match='lr must be functions of the learner'): RecorderCB(lr=0.1)
    with pytest.raises(TypeError, match='sched_func must be callable'): BatchSchedCB(torch.optim.lr_scheduler.StepLR(
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), step_size=1))

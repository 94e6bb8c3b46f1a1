"Tests of miniai.activations: hooks are removed (also on errors), append_stats' numbers, ActivationStats' records and errors."
import copy
from functools import partial

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from miniai.activations import ActivationStats, Hook, Hooks, append_stats
from miniai.learner import Callback, Learner, TrainCB


@pytest.fixture
def toy_model(toy_model):
    "conftest's toy model with two hidden layers: Linear, ReLU, Linear, ReLU, Linear."
    return partial(toy_model, depth=2)


@pytest.fixture
def toy_dls(toy_dls):
    "conftest's toy data, with the training batches in a fixed order (no shuffle) so a test can recompute them."
    return partial(toy_dls, n_train=80, n_valid=40, shuffle=False)


def n_hooks(model): return sum(len(m._forward_hooks) for m in model.modules())


# --- Hook and Hooks ------------------------------------------------------------------------------------------------

def test_hook_calls_f_with_itself_and_is_removed_after_with_block():
    lin, calls = nn.Linear(3, 2), []
    x = torch.randn(5, 3)
    with Hook(lin, lambda h, m, inp, out: calls.append((h, m, inp[0], out.detach()))) as hook:
        y = lin(x)
    lin(x)  # after the block: not recorded
    assert len(calls) == 1 and calls[0][0] is hook and calls[0][1] is lin
    assert torch.equal(calls[0][2], x) and torch.equal(calls[0][3], y.detach())
    assert n_hooks(lin) == 0


def test_hooks_hook_the_children_of_a_model_and_are_removed_after_with_block(toy_model):
    model, x = toy_model(), torch.randn(4, 8)
    with Hooks(model, append_stats) as hooks:
        assert len(hooks) == 5 and n_hooks(model) == 5
        model(x); model(x)
    assert n_hooks(model) == 0
    assert [len(h.stats['mean']) for h in hooks] == [2]*5
    model(x)  # no more recording
    assert [len(h.stats['mean']) for h in hooks] == [2]*5


def test_hooks_are_removed_when_the_block_raises_and_the_error_propagates(toy_model):
    model = toy_model()
    with pytest.raises(RuntimeError, match='boom'):
        with Hooks([model[1], model[3]], append_stats) as hooks:
            assert n_hooks(model) == 2
            model(torch.randn(2, 8))
            raise RuntimeError('boom')
    assert n_hooks(model) == 0 and len(hooks[0].stats['mean']) == 1


def test_hooks_reject_bad_input_before_registering_anything(toy_model):
    model = toy_model()
    with pytest.raises(TypeError, match=r"only hook nn.Modules, got \['str'\]"): Hooks([model[0], 'relu'], append_stats)
    assert n_hooks(model) == 0
    with pytest.raises(ValueError, match='no modules to hook'): Hooks([], append_stats)
    with pytest.raises(TypeError, match='can only hook an nn.Module'): Hook(lambda x: x, append_stats)


# --- append_stats --------------------------------------------------------------------------------------------------

def test_append_stats_records_mean_std_histogram_and_near_zero_fraction():
    torch.manual_seed(0)
    a = torch.randn(64, 3, 5, 5) * 2
    h = Hook(nn.Identity(), append_stats)
    h.m(a); h.remove()
    s = h.stats
    torch.testing.assert_close(s['mean'][0], a.mean()); torch.testing.assert_close(s['std'][0], a.std())
    want = torch.stack([((a.abs() >= lo) & (a.abs() < lo + 0.25)).sum() for lo in torch.arange(40) * 0.25]).float()
    torch.testing.assert_close(s['hist'][0], want)  # 40 bins of width 0.25 over |a| in [0, 10]
    torch.testing.assert_close(s['near_zero'][0], (a.abs() < 0.25).float().mean())


def test_append_stats_respects_nbins_and_hmax():
    a = torch.tensor([0.05, 0.15, 0.5, 1.5, 30.])
    h = Hook(nn.Identity(), lambda *args: append_stats(*args, nbins=4, hmax=2.))
    h.m(a); h.remove()
    assert h.stats['hist'][0].tolist() == [2., 1., 0., 1.]  # bins of 0.5; 30 is out of range
    assert h.stats['near_zero'][0].item() == pytest.approx(2/5)


def test_append_stats_rejects_a_module_without_a_tensor_output():
    class Pair(nn.Module):
        def forward(self, x): return x, x
    with Hooks([Pair()], append_stats) as hooks:
        with pytest.raises(TypeError, match='returned a tuple, not a tensor'): hooks[0].m(torch.ones(2))


# --- ActivationStats -----------------------------------------------------------------------------------------------

def test_activation_stats_one_entry_per_hooked_layer_per_training_batch(toy_dls, toy_model):
    model, dls = toy_model(), toy_dls(n_train=80, n_valid=40, bs=16)
    stats = ActivationStats(nn.ReLU)
    Learner(model, dls, lr=0.1, cbs=[TrainCB(), stats]).fit(3)  # validation batches are not recorded
    assert stats.names == ['0: ReLU', '1: ReLU']
    assert stats.means.shape == (2, 15) and stats.stds.shape == (2, 15) and stats.near_zero.shape == (2, 15)
    assert stats.hists.shape == (2, 15, 40)
    assert n_hooks(model) == 0


def test_activation_stats_values_are_those_of_the_batch(toy_dls, toy_model):
    model, dls = toy_model(), toy_dls()
    before = copy.deepcopy(model)
    stats = ActivationStats(nn.ReLU, nbins=10, hmax=5.)
    Learner(model, dls, lr=0.1, cbs=[TrainCB(), stats]).fit(1, valid=False)
    xb, _ = next(iter(dls.train))  # the first batch met the untrained weights
    r1 = before[1](before[0](xb)); r2 = before[3](before[2](r1))
    for i, r in enumerate((r1, r2)):
        torch.testing.assert_close(stats.means[i, 0], r.mean()); torch.testing.assert_close(stats.stds[i, 0], r.std())
        torch.testing.assert_close(stats.hists[i, 0], r.abs().histc(10, 0, 5.))
        torch.testing.assert_close(stats.near_zero[i, 0], (r.abs() < 0.5).float().mean())
    assert not torch.equal(stats.means[:, 0], stats.means[:, -1])  # training changed the activations


def test_activation_stats_default_hooks_the_children_and_resets_each_fit(toy_dls, toy_model):
    model, dls = toy_model(), toy_dls(n_train=32, bs=16)
    stats = ActivationStats()
    learn = Learner(model, dls, cbs=[TrainCB(), stats])
    learn.fit(1)
    assert len(stats.names) == 5 and stats.means.shape == (5, 2)
    learn.fit(2)
    assert stats.means.shape == (5, 4)


def test_activation_stats_removes_hooks_when_the_fit_fails(toy_dls, toy_model):
    class Fail(Callback):
        def after_batch(self, learn):
            if learn.iter == 1: raise KeyError('stop')
    model = toy_model()
    stats = ActivationStats(nn.ReLU)
    with pytest.raises(KeyError): Learner(model, toy_dls(), cbs=[TrainCB(), stats, Fail()]).fit(1)
    assert n_hooks(model) == 0 and stats.means.shape == (2, 2)


def test_activation_stats_errors(toy_dls, toy_model):
    with pytest.raises(TypeError, match='mods must be None, a module type'): ActivationStats('relu')
    with pytest.raises(ValueError, match='nothing recorded yet'): ActivationStats().means
    model = toy_model()
    with pytest.raises(ValueError, match=r'no GELU modules to hook.*ActivationStats\(nn.ReLU\)'):
        Learner(model, toy_dls(), cbs=[TrainCB(), ActivationStats(nn.GELU)]).fit(1)
    assert n_hooks(model) == 0
    stats = ActivationStats(nn.ReLU)
    Learner(model, toy_dls(), cbs=[TrainCB(), stats]).fit(1, train=False)
    with pytest.raises(ValueError, match='no training batch was recorded'): stats.means


def test_activation_stats_plots_one_line_or_image_per_layer(toy_dls, toy_model):
    stats = ActivationStats(nn.ReLU)
    Learner(toy_model(), toy_dls(), cbs=[TrainCB(), stats]).fit(1)
    axs = stats.plot_stats()
    assert [len(ax.lines) for ax in axs] == [2, 2] and len(axs[0].lines[0].get_ydata()) == 5
    axs = stats.color_dim()
    assert len(axs) == 2 and axs[0].images[0].get_array().shape == (40, 5)
    ax = stats.dead_chart()
    assert len(ax.lines) == 2 and ax.get_ylim()[1] > 1
    plt.close('all')

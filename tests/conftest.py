"Shared fixtures: small learnable data in DataLoaders, small models, a quiet MetricsCB, and callbacks that fail on cue."
import pytest
import torch
from torch import nn

from miniai.datasets import DataLoaders
from miniai.learner import Callback, MetricsCB


def make_toy_dls(n_train=100, n_valid=30, bs=16, seed=0, n_in=8, n_out=4, shuffle=True):
    "Random inputs labelled by a fixed random linear map (learnable), in torch DataLoaders; the last batches are smaller."
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n_in, n_out, generator=g)
    x = torch.randn(n_train + n_valid, n_in, generator=g)
    y = (x @ w).argmax(1)
    tds = torch.utils.data.TensorDataset(x[:n_train], y[:n_train])
    vds = torch.utils.data.TensorDataset(x[n_train:], y[n_train:])
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoaders(torch.utils.data.DataLoader(tds, bs, shuffle=shuffle, generator=gen),
                       torch.utils.data.DataLoader(vds, bs))


def make_toy_model(seed=0, n_in=8, n_out=4, depth=1):
    "Linear-ReLU layers of width 16 (`depth` of them) and a linear head, initialised from `seed`."
    torch.manual_seed(seed)
    layers, ni = [], n_in
    for _ in range(depth): layers += [nn.Linear(ni, 16), nn.ReLU()]; ni = 16
    return nn.Sequential(*layers, nn.Linear(ni, n_out))


def make_image_dls(n=256, bs=32):
    "(B, 1, 8, 8) images labelled by the sign of their mean, as lists of batches (with a length, no shuffle)."
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=g); y = (x.mean((1, 2, 3)) > 0).long()
    batches = lambda: [(x[i:i+bs], y[i:i+bs]) for i in range(0, n, bs)]
    return DataLoaders(batches(), batches())


def make_quiet_metrics(*ms, **named):
    "A MetricsCB that keeps its rows in `hist` without printing them."
    cb = MetricsCB(*ms, **named)
    cb.log = lambda row: None
    return cb


class Raise(Callback):
    "Raises `exc` at event `at` on the `nth` time it happens (in the training passes only if `training`)."
    def __init__(self, at, exc, nth=1, training=None): self.at, self.exc, self.nth, self.training, self.count = at, exc, nth, training, 0
    def __getattr__(self, name):
        if name != self.__dict__.get('at'): raise AttributeError(name)
        def f(learn):
            if self.training is not None and learn.training != self.training: return
            self.count += 1
            if self.count == self.nth: raise self.exc() if isinstance(self.exc, type) else self.exc
        return f


@pytest.fixture
def toy_dls(): return make_toy_dls

@pytest.fixture
def toy_model(): return make_toy_model

@pytest.fixture
def image_dls(): return make_image_dls

@pytest.fixture
def quiet(): return make_quiet_metrics

@pytest.fixture
def raise_at(): return Raise

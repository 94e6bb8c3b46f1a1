"""Recipes that tests/test_distributed.py launches under torchrun (`python -m miniai.distributed
ddp_recipes:NAME`, this folder on PYTHONPATH), and calls in its own process as the one-process reference."""
import os, signal, time
import torch
from torch import nn
import torch.nn.functional as F
from miniai.datasets import DataLoaders, BatchDataset, batch_loader
from miniai.training import DataLoader as MiniDataLoader, Dataset as MiniDataset
from miniai.learner import Learner, TrainCB, DeviceCB, MetricsCB, ProgressCB, Accuracy, Callback
from miniai.learner import MixedPrecision, set_seed
from miniai.sgd import Adam, EMACB
from miniai.ddpm import UNet, DDPMCB, NoiseSchedule

KINDS = ('torch', 'batched', 'mini')  # torch's DataLoader per item, miniai's batch_loader, notebook 03's


def toy_dls(kind, n_train=101, n_valid=31, bs=16, seed=0):
    "Learnable toy data (a linear map's argmax); 101 items in batches of 16: a last batch of 5 (3 + 2)."
    g = torch.Generator().manual_seed(seed)
    w, x = torch.randn(8, 4, generator=g), torch.randn(n_train + n_valid, 8, generator=g)
    y = (x @ w).argmax(1)
    xt, yt, xv, yv = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    gen = torch.Generator().manual_seed(seed)
    if kind == 'torch':
        tds, vds = torch.utils.data.TensorDataset(xt, yt), torch.utils.data.TensorDataset(xv, yv)
        return DataLoaders(torch.utils.data.DataLoader(tds, bs, shuffle=True, generator=gen),
                           torch.utils.data.DataLoader(vds, bs))
    if kind == 'batched':
        return DataLoaders(batch_loader(BatchDataset(xt, yt), bs, shuffle=True, generator=gen),
                           batch_loader(BatchDataset(xv, yv), bs))
    if kind == 'mini':  # shuffled from torch's global generator: rank 0 must draw what a single process draws
        return DataLoaders(MiniDataLoader(MiniDataset(xt, yt), bs, shuffle=True),
                           MiniDataLoader(MiniDataset(xv, yv), bs))
    raise ValueError(kind)


class Fail(Callback):
    "Rank `rank` is killed, hangs or raises at the third training batch of epoch `epoch`."
    def __init__(self, rank, epoch, how): self.rank, self.epoch, self.how = rank, epoch, how
    def before_batch(self, learn):
        if int(os.environ.get('RANK', -1)) != self.rank or not learn.training: return
        if learn.epoch != self.epoch or learn.iter != 2: return
        if self.how == 'kill': os.kill(os.getpid(), signal.SIGKILL)
        if self.how == 'hang': time.sleep(600)
        raise RuntimeError('this rank failed on purpose')


def toy(kind='torch', epochs=3, fail=None, cbs=()):
    "An MLP trained with Adam, 1cycle, an EMA of the weights, accuracy and progress: `(model, record)`."
    set_seed(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    extra = [Fail(*fail)] if fail else []
    learn = Learner(model, toy_dls(kind), F.cross_entropy, lr=0.05, opt_func=Adam,
                    cbs=[TrainCB(), DeviceCB(), MetricsCB(Accuracy()), ProgressCB(), EMACB(0.9), *extra,
                         *cbs])
    return model, learn.fit_one_cycle(epochs)


def tiny_ddpm(cbs=()):
    "A small U-Net on random 8×8 images: DDPMCB, MixedPrecision (float32 without bf16), EMACB and 1cycle."
    set_seed(2)
    x = torch.rand(70, 1, 8, 8) * 2 - 1; y = torch.zeros(70, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    dls = DataLoaders(batch_loader(BatchDataset(x[:50], y[:50]), 16, shuffle=True, generator=gen),
                      batch_loader(BatchDataset(x[50:], y[50:]), 16))
    learn = Learner(UNet(nfs=(8, 16)), dls, F.mse_loss, lr=1e-3, opt_func=Adam,
                    cbs=[DDPMCB(NoiseSchedule.cosine()), DeviceCB(), MixedPrecision(), MetricsCB(),
                         EMACB(0.9), *cbs])
    return learn.model, learn.fit_one_cycle(2)


def all_kinds(cbs=()):
    "`toy` with each kind of loader, then `tiny_ddpm`, one after the other in the same processes."
    runs = {}
    for name, run in [*((k, lambda k=k: toy(k, cbs=cbs)) for k in KINDS), ('ddpm', lambda: tiny_ddpm(cbs))]:
        model, rec = run()
        runs[name] = dict(state=model.state_dict(), hist=rec['hist'],
                          fingerprints=cbs[0].fingerprints if cbs else None)
    return model, dict(runs=runs)

"""Learner overhead: the same small CNN on the same Fashion-MNIST batches, trained by a hand-written PyTorch loop and by
miniai's Learner with its standard callbacks (TrainCB, DeviceCB, MetricsCB, ProgressCB), timed alternately in one process.

    .venv/bin/python bench/learner_vs_loop.py [--batches 200] [--repeats 5] [--bs 256] [--loader] [--threads N] [--smoke]

Both runs start from the same weights and see the same batches, so they end with the same training loss (printed, as a check
that they do the same work). By default the batches are taken from `fashion_dls` once and kept in a list, so only the training
loop is timed; `--loader` iterates the DataLoader in both instead (data loading then adds the same time to both).
The runs alternate (plain first, then learner first, ...) and each is timed by the wall clock and by the process's CPU time,
which other programs on a shared machine disturb less; the headline is the median over rounds of the ratio of the two runs of a
round, which ran back to back. On a busy machine `--threads 1` steadies the numbers a lot (two torch threads on two shared cores
wait for each other). A second, shorter part repeats the comparison with a tiny linear model,
whose arithmetic is so cheap that what is left is the Learner's own cost per batch, in microseconds.
"""
import argparse, statistics, time
from itertools import islice

import torch
import torch.nn.functional as F
from torch import nn

from miniai.conv import conv, def_device, to_device
from miniai.datasets import DataLoaders, fashion_dls
from miniai.learner import Accuracy, DeviceCB, Learner, MetricsCB, ProgressCB, TrainCB, set_seed


def cnn():
    return nn.Sequential(conv(1, 8), conv(8, 16), conv(16, 32), conv(32, 64), conv(64, 10, act=False), nn.Flatten())

def tiny(): return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


def plain_loop(model, batches, lr):
    "What one would write by hand: the training step, plus the item-weighted training loss and accuracy that MetricsCB reports."
    model.to(def_device).train()
    opt = torch.optim.SGD(model.parameters(), lr)
    tot_loss, correct, n = 0., 0, 0
    for xb, yb in batches:
        xb, yb = to_device((xb, yb))
        preds = model(xb)
        loss = F.cross_entropy(preds, yb)
        loss.backward(); opt.step(); opt.zero_grad()
        tot_loss += loss.detach() * len(yb); correct += (preds.argmax(1) == yb).sum(); n += len(yb)
    return float(tot_loss / n), float(correct / n)


def learner_run(model, batches, lr):
    metrics = MetricsCB(Accuracy())
    Learner(model, DataLoaders(batches, None), lr=lr, cbs=[TrainCB(), DeviceCB(), metrics, ProgressCB()]).fit(1, valid=False)
    return metrics.hist[-1]['train_loss'], metrics.hist[-1]['train_accuracy']


class Batches:
    "The first `n` batches of a DataLoader (repeating it if needed), from the same seed each time it is iterated."
    def __init__(self, dl, n): self.dl, self.n = dl, n
    def __len__(self): return self.n
    def __iter__(self):
        self.dl.sampler.generator.manual_seed(0)
        def forever():
            while True: yield from self.dl
        return islice(forever(), self.n)


def compare(get_model, batches, n_items, repeats, lr, verbose=True):
    "Time plain loop and Learner alternately; returns {kind: [(wall, cpu), ...]}."
    res = {'plain': [], 'learner': []}
    for r in range(repeats):
        for kind in (('plain', 'learner') if r % 2 == 0 else ('learner', 'plain')):
            set_seed(0); model = get_model()
            w0, c0 = time.perf_counter(), time.process_time()
            loss, acc = (plain_loop if kind == 'plain' else learner_run)(model, batches, lr)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            res[kind].append((wall, cpu))
            if verbose: print(f"  run {r+1} {kind:8s} {wall:6.2f} s wall {cpu:6.2f} s CPU  {n_items/wall:7.0f} samples/s  train loss {loss:.4f} accuracy {acc:.4f}")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--batches', type=int, default=200, help='training batches per timed run')
    ap.add_argument('--repeats', type=int, default=5, help='timed runs of each, alternating which goes first')
    ap.add_argument('--bs', type=int, default=256, help='batch size')
    ap.add_argument('--lr', type=float, default=0.2)
    ap.add_argument('--loader', action='store_true', help='iterate the DataLoader in both runs instead of preloaded batches')
    ap.add_argument('--threads', type=int, default=None, help="torch's intra-op threads (default: torch's choice); 1 is steadier on a busy machine")
    ap.add_argument('--smoke', action='store_true', help='a few tiny runs, only to check that the script works')
    a = ap.parse_args()
    if a.smoke: a.batches, a.repeats, a.bs = 4, 1, 32
    if a.threads: torch.set_num_threads(a.threads)
    dl = fashion_dls(bs=a.bs, seed=0).train
    batches = Batches(dl, a.batches) if a.loader else list(Batches(dl, a.batches))
    n_items = a.batches * a.bs
    print(f"torch {torch.__version__}, device {def_device}, {torch.get_num_threads()} threads; the CNN on {a.batches} batches of {a.bs}, "
          f"{'from the DataLoader' if a.loader else 'preloaded'}; {a.repeats} alternating runs each")
    compare(cnn, Batches(dl, 10) if a.loader else batches[:10], 10*a.bs, 1, a.lr, verbose=False)  # warm-up: first-call costs
    res = compare(cnn, batches, n_items, a.repeats, a.lr)
    wall = {k: [w for w, _ in v] for k, v in res.items()}
    cpu = {k: [c for _, c in v] for k, v in res.items()}
    for k in ('plain', 'learner'):
        print(f"{k:8s} wall: median {statistics.median(wall[k]):6.2f} s ({n_items/statistics.median(wall[k]):.0f} samples/s), "
              f"min {min(wall[k]):6.2f} s ({n_items/min(wall[k]):.0f} samples/s); CPU median {statistics.median(cpu[k]):6.2f} s")
    ratio = lambda d, f: f(d['learner']) / f(d['plain'])
    paired = [l/p for l, p in zip(wall['learner'], wall['plain'])]  # the two runs of a round ran back to back, under similar load
    print(f"Learner / plain: {statistics.median(paired):.3f} (median of the {a.repeats} rounds' ratios; rounds: "
          f"{', '.join(f'{x:.3f}' for x in paired)})")
    print(f"                 {ratio(wall, statistics.median):.3f} (median wall), {ratio(wall, min):.3f} (min wall), "
          f"{ratio(cpu, statistics.median):.3f} (median CPU); goal <= 1.05")

    # the Learner's own cost per batch, where a tiny model leaves almost nothing else to time
    n_tiny = 20 if a.smoke else 1000
    tb = (batches * (n_tiny // a.batches + 1))[:n_tiny] if not a.loader else Batches(dl, n_tiny)
    compare(tiny, tb[:20] if not a.loader else Batches(dl, 20), 20*a.bs, 1, a.lr, verbose=False)
    res = compare(tiny, tb, n_tiny*a.bs, a.repeats, a.lr, verbose=False)
    us = {k: 1e6*statistics.median(w for w, _ in v)/n_tiny for k, v in res.items()}
    print(f"tiny linear model, {n_tiny} batches: plain {us['plain']:.0f} us/batch, Learner {us['learner']:.0f} us/batch "
          f"-> the Learner's own cost about {us['learner']-us['plain']:.0f} us per batch")


if __name__ == '__main__':
    main()

"""Two ways to use two cores for one training run: one process with two torch threads, or two processes with
one thread each (torchrun, gloo, `DistributedCB`): the same recipe, model, global batch and images, in turn.

    .venv/bin/python bench/threads_vs_processes.py [--epochs 1] [--n-train 60000] [--n-valid 10000] [--bs 256]
                                                   [--nfs 32,64,128,256] [--repeats 2] [--json PATH] [--smoke]

Both are `python -m miniai.distributed fashion_cnn ...`: the first as one process with OMP_NUM_THREADS=2,
the second under `torchrun --standalone --nproc_per_node 2` with OMP_NUM_THREADS=1. The rounds alternate which
goes first. Each run reports the seconds spent inside the fit (training and validation, from the recipe's
record) and the wall-clock seconds of the whole command (Python's start, imports, loading the data, torchrun's
start); the headline is the median of the fit times and their ratio. Both runs see the same global batches, so
they must end with the same weights up to rounding: the largest difference is printed, a check that they did
the same work.
Numbers from a machine that is busy with other work say more about that work than about threads and processes:
run it on an otherwise idle machine.
"""
import argparse, json, os, platform, statistics, sys, tempfile, time
from pathlib import Path

from miniai.checkpoint import read_checkpoint
from miniai.distributed import launch


def cpu_name() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or 'an unknown CPU'


def run(kind, settings, out, timeout):
    "One timed run: 'threads' (1 process, 2 threads) or 'processes' (2 processes, 1 thread each)."
    args = ['-m', 'miniai.distributed', 'fashion_cnn', *settings, '--out', out]
    t0 = time.perf_counter()
    alone = kind == 'threads'
    r = launch(args, nproc=None if alone else 2, threads=2 if alone else 1, timeout=timeout)
    wall = time.perf_counter() - t0
    if r.returncode != 0: sys.exit(f"the {kind} run failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    ck = read_checkpoint(out)
    return dict(fit_s=ck['record']['minutes'] * 60, wall_s=wall, model=ck['model'], hist=ck['record']['hist'])


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--epochs', type=int, default=1)
    p.add_argument('--n-train', type=int, default=60_000)
    p.add_argument('--n-valid', type=int, default=10_000)
    p.add_argument('--bs', type=int, default=256, help='global batch size, the same for both')
    p.add_argument('--nfs', default='32,64,128,256', help="simple_cnn's channels")
    p.add_argument('--repeats', type=int, default=2, help='rounds of one run each')
    p.add_argument('--timeout', type=float, default=1800., help='seconds before a run is stopped')
    p.add_argument('--json', type=Path, help='also write the results here')
    p.add_argument('--smoke', action='store_true', help='a tiny run, to check that the script works')
    a = p.parse_args()
    if a.smoke: a.epochs, a.n_train, a.n_valid, a.bs, a.nfs, a.repeats = 1, 512, 256, 128, '8,16,32,64', 1
    if min(a.epochs, a.n_train, a.n_valid, a.bs, a.repeats) < 1: p.error('sizes and repeats must be >= 1')
    nfs = tuple(int(c) for c in a.nfs.split(','))
    settings = [f'epochs={a.epochs}', f'n_train={a.n_train}', f'n_valid={a.n_valid}', f'bs={a.bs}',
                f'nfs={nfs}']
    print(f"fashion_cnn {' '.join(settings)}; {a.repeats} round(s) on {cpu_name()} ({os.cpu_count()} cores)",
          flush=True)
    runs = {'threads': [], 'processes': []}
    with tempfile.TemporaryDirectory() as d:
        for i in range(a.repeats):
            for kind in (['threads', 'processes'] if i % 2 == 0 else ['processes', 'threads']):
                r = run(kind, settings, Path(d)/f'{kind}.pth', a.timeout)
                runs[kind].append(r)
                print(f"round {i}: {kind:9s} fit {r['fit_s']:6.1f} s  whole command {r['wall_s']:6.1f} s",
                      flush=True)
    m1, m2 = runs['threads'][-1]['model'], runs['processes'][-1]['model']
    diff = max((m1[k] - m2[k]).abs().max().item() for k in m1)
    params = sum(v.numel() for k, v in m1.items() if v.is_floating_point())
    med = {k: {s: statistics.median(r[s] for r in rs) for s in ('fit_s', 'wall_s')} for k, rs in runs.items()}
    acc = {k: rs[-1]['hist'][-1].get('valid_accuracy') for k, rs in runs.items()}
    print(f"\n{'':28s}{'fit (s)':>9s}{'command (s)':>13s}{'valid acc':>11s}")
    for k, name in (('threads', '1 process x 2 threads'), ('processes', '2 processes x 1 thread')):
        print(f"{name:28s}{med[k]['fit_s']:9.1f}{med[k]['wall_s']:13.1f}{acc[k]:11.4f}")
    print(f"fit time, threads / processes: {med['threads']['fit_s'] / med['processes']['fit_s']:.2f} "
          f"(above 1: the processes were faster)")
    print(f"largest weight difference between the two: {diff:.1e} ({params:,} weights)")
    if a.json:
        res = dict(cpu=cpu_name(), cores=os.cpu_count(), epochs=a.epochs, n_train=a.n_train, bs=a.bs,
                   nfs=list(nfs), repeats=a.repeats, params=params, weight_diff=diff,
                   **{k: dict(med[k], valid_accuracy=acc[k]) for k in runs})
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == '__main__': main()

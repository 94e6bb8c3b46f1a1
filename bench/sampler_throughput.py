"""Sampler throughput: DDIM sampling with miniai's `diffusion_sample` + `ddim_step` against diffusers' `DDIMScheduler` driving the
same U-Net (same weights, same starting noise, same batches, same bf16 autocast where the CPU has it), timed in one run.

    .venv/bin/python bench/sampler_throughput.py [--n 256] [--steps 50] [--repeats 3] [--trained] [--alternate [--threads N]] [--smoke]

By default the two run side by side: at the same time, each in its own process on its own core with one torch thread, then again with
the cores swapped, so that the machine's drifts in speed (several percent here from one minute to the next) hit both alike.

Prints images/second for each, the ratio, and the largest difference between the two samplers' final images (they run the same
arithmetic, so it should be float rounding only). By default the U-Net is freshly initialised with a fixed seed (speed does not depend
on the weights); `--trained` uses `pretrained_ddpm()` from the model cache (training it first if it is not there).
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time
from functools import partial
import torch

from miniai.ddpm import UNet, NoiseSchedule, diffusion_sample, pretrained_ddpm, ddim_step
from miniai.learner import autocast_dtype


def ours(model, sched, n, steps, seed):
    return diffusion_sample(model, sched, n, steps, step_fn=ddim_step, seed=seed, bs=n, progress=False)

@torch.no_grad()
def theirs(model, scheduler, n, steps, seed):
    "The loop diffusers' pipelines run: model call, then `scheduler.step`."
    scheduler.set_timesteps(steps)
    x = torch.randn((n, 1, 32, 32), generator=torch.Generator().manual_seed(seed))
    dtype = autocast_dtype('cpu')
    for t in scheduler.timesteps:
        with torch.autocast('cpu', dtype=dtype, enabled=dtype is not None):
            eps = model(x, torch.full((n,), int(t), dtype=torch.long)).float()
        x = scheduler.step(eps, t, x, use_clipped_model_output=True).prev_sample  # ours re-derives ε from the clamped x0 too
    return x


def setup(trained):
    "The U-Net, our schedule, and diffusers' scheduler configured the same way."
    import diffusers
    if trained: model = pretrained_ddpm()[0]
    else:
        torch.manual_seed(0); model = UNet().eval()
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule='squaredcos_cap_v2', clip_sample=True,
                                        timestep_spacing='trailing')  # ours clamps x0 to [-1, 1] and starts at t = T-1
    return {'miniai': partial(ours, model, NoiseSchedule.cosine()), 'diffusers': partial(theirs, model, scheduler)}


def worker(a):
    "One sampler on one core: set up, say 'ready', wait for 'go', time `repeats` runs, save the last images, print the times."
    os.sched_setaffinity(0, {a.core}); torch.set_num_threads(1)
    run = setup(a.trained)[a.worker]
    run(8, 2, seed=0)                                            # warm up
    print('ready', flush=True); sys.stdin.readline()
    times = []
    for r in range(a.repeats):
        t0 = time.perf_counter(); x = run(a.n, a.steps, seed=r); times.append(time.perf_counter() - t0)
    torch.save(x, a.out)
    print(json.dumps(times), flush=True)


def side_by_side(a, names):
    "Both samplers at the same time, one core each, then with the cores swapped: drifts in the machine's speed hit both alike."
    times, outs, tmp = {k: [] for k in names}, {}, tempfile.mkdtemp()
    args = ['--n', str(a.n), '--steps', str(a.steps), '--repeats', str(a.repeats)] + (['--trained'] if a.trained else [])
    for cores in ((0, 1), (1, 0)):
        procs = {k: subprocess.Popen([sys.executable, __file__, '--worker', k, '--core', str(c), '--out', f'{tmp}/{k}.pt'] + args,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for k, c in zip(names, cores)}
        for k, p in procs.items():
            while (line := p.stdout.readline()) and line.strip() != 'ready': pass
            if not line: sys.exit(f'the {k} worker stopped before it was ready (exit code {p.wait()})')
        for p in procs.values(): p.stdin.write('go\n'); p.stdin.flush()
        for k, p in procs.items():
            out, _ = p.communicate()
            if p.returncode: sys.exit(f'the {k} worker failed (exit code {p.returncode})')
            times[k] += json.loads(out.strip().splitlines()[-1])
            outs[k] = torch.load(f'{tmp}/{k}.pt')
        ratio = statistics.median(times[names[0]][-a.repeats:]) / statistics.median(times[names[1]][-a.repeats:])
        print(f'cores {cores}: ' + ', '.join(f'{k} ' + ' '.join(f'{t:.2f}' for t in times[k][-a.repeats:]) + ' s' for k in names)
              + f'; ratio {ratio:.3f}', flush=True)
    return times, outs


def alternate(a, names):
    "Both samplers in this process, one after the other, in alternating order."
    if a.threads: torch.set_num_threads(a.threads)
    runs = setup(a.trained)
    times, outs = {k: [] for k in names}, {}
    for r in range(a.repeats):
        for k in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter(); outs[k] = runs[k](a.n, a.steps, seed=r); times[k].append(time.perf_counter() - t0)
        print(f'round {r}: ' + ', '.join(f'{k} {times[k][-1]:.2f} s' for k in names), flush=True)
    return times, outs


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n', type=int, default=256); p.add_argument('--steps', type=int, default=50)
    p.add_argument('--repeats', type=int, default=3); p.add_argument('--trained', action='store_true')
    p.add_argument('--alternate', action='store_true', help='one process, the samplers one after the other (needs only one core)')
    p.add_argument('--threads', type=int, default=None, help='torch threads with --alternate')
    p.add_argument('--worker', help=argparse.SUPPRESS); p.add_argument('--core', type=int, help=argparse.SUPPRESS)
    p.add_argument('--out', help=argparse.SUPPRESS)
    p.add_argument('--smoke', action='store_true', help='one tiny alternating run, only to check that the script works')
    a = p.parse_args()
    if a.smoke: a.n, a.steps, a.repeats, a.alternate, a.trained = 4, 2, 1, True, False
    if a.worker: return worker(a)
    import diffusers
    names = ['miniai', 'diffusers']
    if not a.alternate and len(os.sched_getaffinity(0)) < 2: sys.exit('side by side needs two cores; use --alternate on one')
    if a.trained: pretrained_ddpm()                                  # train and cache it here first, not in both workers
    how = 'alternating in one process' if a.alternate else 'side by side, one core and one thread each, then cores swapped'
    print(f'{a.n} images, {a.steps} DDIM steps, {how}, autocast {autocast_dtype("cpu")}, diffusers {diffusers.__version__}')
    times, outs = (alternate if a.alternate else side_by_side)(a, names)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in names: print(f'{k:>9}: {a.n / med[k]:7.1f} images/s (median {med[k]:.2f} s of {len(times[k])} runs)')
    print(f'time ratio miniai / diffusers: {med["miniai"] / med["diffusers"]:.3f}  (≤ 1: ours is no slower)')
    print(f'largest difference between the final images: {(outs["miniai"] - outs["diffusers"]).abs().max().item():.2e}')


if __name__ == '__main__': main()

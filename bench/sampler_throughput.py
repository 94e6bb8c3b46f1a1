"""Sampler throughput: DDIM sampling with miniai's `diffusion_sample` + `ddim_step` against diffusers' `DDIMScheduler` driving the
same U-Net (same weights, same starting noise, same batches, same bf16 autocast where the CPU has it), timed alternately in one run.

    .venv/bin/python bench/sampler_throughput.py [--n 256] [--steps 50] [--repeats 3] [--threads N] [--trained]

Prints images/second for each, the ratio, and the largest difference between the two samplers' final images (they run the same
arithmetic, so it should be float rounding only). By default the U-Net is freshly initialised with a fixed seed (speed does not depend
on the weights); `--trained` uses `pretrained_ddpm()` from the model cache (training it first if it is not there).
"""
import argparse, statistics, time
from functools import partial
import torch

from miniai.ddpm import UNet, NoiseSchedule, diffusion_sample, pretrained_ddpm
from miniai.ddim_fid import ddim_step
from miniai.resnet import autocast_dtype


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


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n', type=int, default=256); p.add_argument('--steps', type=int, default=50)
    p.add_argument('--repeats', type=int, default=3); p.add_argument('--threads', type=int, default=None)
    p.add_argument('--trained', action='store_true')
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    import diffusers
    if a.trained: model = pretrained_ddpm()[0]
    else:
        torch.manual_seed(0); model = UNet().eval()
    sched = NoiseSchedule.cosine()
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule='squaredcos_cap_v2', clip_sample=True,
                                          timestep_spacing='trailing')  # ours clamps x0 to [-1, 1] and starts at t = T-1
    runs = {'miniai': partial(ours, model, sched), 'diffusers': partial(theirs, model, scheduler)}
    times, outs = {k: [] for k in runs}, {}
    print(f'{a.n} images, {a.steps} DDIM steps, {torch.get_num_threads()} threads, autocast {autocast_dtype("cpu")}, diffusers {diffusers.__version__}')
    for r in range(a.repeats):
        order = list(runs) if r % 2 == 0 else list(runs)[::-1]
        for k in order:
            t0 = time.perf_counter(); outs[k] = runs[k](a.n, a.steps, seed=r); times[k].append(time.perf_counter() - t0)
        print(f'round {r}: ' + ', '.join(f'{k} {times[k][-1]:.2f} s' for k in runs), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in runs: print(f'{k:>9}: {a.n / med[k]:7.1f} images/s (median {med[k]:.2f} s)')
    print(f'time ratio miniai / diffusers: {med["miniai"] / med["diffusers"]:.3f}  (≤ 1: ours is no slower)')
    print(f'largest difference between the final images: {(outs["miniai"] - outs["diffusers"]).abs().max().item():.2e}')


if __name__ == '__main__': main()

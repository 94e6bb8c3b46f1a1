"""Per-step time of miniai's samplers (`sigma_sample` with `euler_step`, `heun_step`, `euler_ancestral_step`,
`dpmpp_2m_step`) against diffusers' schedulers configured the same way, driving the same model, side by side in one run.

    .venv/bin/python bench/sampler_steps.py [--n 128] [--steps 10] [--repeats 3] [--threads N] [--smoke]

For each sampler the two loops run in alternating order, `repeats` times each, from the same starting noise, twice:
once with our U-Net (freshly initialised with a fixed seed: speed does not depend on the weights), which is what
sampling costs, and once with a model that does almost nothing (one 1×1 convolution), which leaves the steps' own
arithmetic and bookkeeping. Prints milliseconds per model evaluation for each, the ratio ours / diffusers (≤ 1: ours
is no slower) and the largest difference between the two loops' final images, relative to their size (the same
arithmetic, so rounding only; except for DPM-Solver++ with Karras σ, where diffusers rounds the time steps it gives
the model down to whole numbers).
"""
import argparse, math, statistics, time
from functools import partial
import torch
from torch import nn

from miniai.ddpm import UNet, NoiseSchedule
from miniai.learner import autocast_dtype
from miniai.samplers import (sigma_sample, even_sigmas, karras_sigmas, schedule_sigmas, sigma_to_t, euler_step,
                             heun_step, euler_ancestral_step, dpmpp_2m_step)


class Tiny(nn.Module):
    "Almost no work: what is left of a sampler's time is its own."
    def __init__(self): super().__init__(); self.conv = nn.Conv2d(1, 1, 1)
    def forward(self, x, t): return self.conv(x)


class ancestral_on_karras:
    "diffusers' ancestral Euler, which has no Karras option, with its levels set to `karras_sigmas` by `set_timesteps`."
    def __init__(self, sch, sched): self.sch, self.sched = sch, sched
    def set_timesteps(self, n):
        self.sch.set_timesteps(n)
        sig = karras_sigmas(self.sched, n)
        self.sch.sigmas, self.sch.timesteps = sig.float(), sigma_to_t(self.sched, sig[:-1]).float()
    def __getattr__(self, k): return getattr(self.sch, k)

def configs(sched):
    "(name, our step, our levels, diffusers' scheduler set up alike, whether it works in the model's space)."
    import diffusers
    cfg = dict(num_train_timesteps=sched.T, beta_schedule='squaredcos_cap_v2')
    s_min = schedule_sigmas(sched)[0].item()
    whole = partial(karras_sigmas, sigma_max=None)
    return [
        ('Euler, even t', euler_step, even_sigmas,
         lambda: diffusers.EulerDiscreteScheduler(**cfg, timestep_spacing='trailing'), False),
        ('Euler, Karras σ', euler_step, karras_sigmas,
         lambda: diffusers.EulerDiscreteScheduler(**cfg, use_karras_sigmas=True, sigma_min=s_min, sigma_max=80.),
         False),
        ('Heun, Karras σ (whole range)', heun_step, whole,
         lambda: diffusers.HeunDiscreteScheduler(**cfg, use_karras_sigmas=True, timestep_spacing='linspace'), False),
        ('ancestral Euler, Karras σ', euler_ancestral_step, karras_sigmas,
         partial(ancestral_on_karras, diffusers.EulerAncestralDiscreteScheduler(**cfg), sched), False),
        ('DPM-Solver++(2M), even t', dpmpp_2m_step, even_sigmas,
         lambda: diffusers.DPMSolverMultistepScheduler(**cfg, timestep_spacing='trailing'), True),
        ('DPM-Solver++(2M), Karras σ (whole range)', dpmpp_2m_step, whole,
         lambda: diffusers.DPMSolverMultistepScheduler(**cfg, use_karras_sigmas=True), True)]


def ours(model, sched, step_fn, levels, n, steps, seed):
    x, nfe = sigma_sample(model, sched, levels(sched, steps), step_fn, n=n, clip=None, bs=n, seed=seed)
    return x, nfe

@torch.no_grad()
def theirs(model, make, vp, n, steps, seed):
    "The loop diffusers' pipelines run: scale the input, call the model, `scheduler.step`."
    sch = make(); sch.set_timesteps(steps); sch.set_begin_index(0)
    sig0 = sch.sigmas[0].item()
    gen = torch.Generator().manual_seed(seed)              # the starting noise, then any fresh noise: as ours
    x = torch.randn((n, 1, 32, 32), generator=gen)          # x_t
    if not vp: x = x * math.sqrt(sig0 ** 2 + 1)             # into σ space, as ours
    dtype = autocast_dtype('cpu')
    for t in sch.timesteps:
        xin = x if vp else sch.scale_model_input(x, t)
        with torch.autocast('cpu', dtype=dtype, enabled=dtype is not None):
            eps = model(xin, torch.full((n,), float(t))).float()
        x = sch.step(eps, t, x, **({'generator': gen} if isinstance(sch, ancestral_on_karras) else {})).prev_sample
    return x, len(sch.timesteps)


def bench(a, model, label):
    sched = NoiseSchedule.cosine()
    print(f"{label}: {a.n} images, {a.steps} steps, {a.repeats} runs each, alternating, "
          f"{torch.get_num_threads()} thread(s), autocast {autocast_dtype('cpu')}")
    ratios = []
    for name, step_fn, levels, make, vp in configs(sched):
        runs = {'ours': partial(ours, model, sched, step_fn, levels), 'diffusers': partial(theirs, model, make, vp)}
        for f in runs.values(): f(2, 2, 0)                                           # warm up
        times, outs = {k: [] for k in runs}, {}
        for r in range(a.repeats):
            for k in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                t0 = time.perf_counter(); outs[k] = runs[k](a.n, a.steps, 0); times[k].append(time.perf_counter() - t0)
        (xo, nfe), (xd, nfe_d) = outs['ours'], outs['diffusers']        # at σ = 0 both spaces are one
        assert nfe == nfe_d, f"{name}: {nfe} model evaluations against diffusers' {nfe_d}"
        ms = {k: statistics.median(v) / nfe * 1000 for k, v in times.items()}
        ratios.append(ms['ours'] / ms['diffusers'])
        diff = (xo - xd).abs().max().item() / max(xo.abs().max().item(), 1.)
        print(f"  {name:41} {nfe:3} evaluations: ours {ms['ours']:8.2f} ms, diffusers {ms['diffusers']:8.2f} ms "
              f"per evaluation; ratio {ratios[-1]:.3f}; largest difference {diff:.1e} of the images' size",
              flush=True)
    print(f"  time ratio ours / diffusers: median {statistics.median(ratios):.3f}, worst {max(ratios):.3f}  "
          f"(≤ 1: ours is no slower)")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n', type=int, default=128); p.add_argument('--steps', type=int, default=10)
    p.add_argument('--repeats', type=int, default=3); p.add_argument('--threads', type=int, default=None)
    p.add_argument('--smoke', action='store_true', help='a tiny run, only to check that the script works')
    a = p.parse_args()
    if a.smoke: a.n, a.steps, a.repeats = 2, 3, 1
    if a.threads: torch.set_num_threads(a.threads)
    import diffusers
    print(f"diffusers {diffusers.__version__}, torch {torch.__version__}")
    torch.manual_seed(0)
    bench(a, UNet().eval(), 'our U-Net (sampling as it costs)')
    torch.manual_seed(0)
    bench(a, Tiny().eval(), "a 1×1 convolution (the steps' own time)")


if __name__ == '__main__': main()

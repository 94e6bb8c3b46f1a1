"""Training cost per epoch: notebook 11's pixel U-Net on 32×32 images against notebook 15's U-Net on 4×8×8 latents.

    .venv/bin/python bench/latent_vs_pixel.py [--batches 60] [--rounds 2] [--json] [--smoke]

Each round trains both, alternating which goes first, for `--batches` batches of 64 with their own recipes (`train_ddpm` on
images, `train_latent_ddpm` on the autoencoder's cached latents: the same schedule, loss weighting, optimizer, precision and
weight average) in this one process with torch's default threads. The time of each run, from `Learner.fit`'s own clock, is
scaled to an epoch of 60,000 images; the median over rounds is reported. Encoding the latents is not counted: it happens once,
before any epoch (`fashion_latents` caches them). With `--json` the last line is a JSON record of the result.
"""
import argparse, json, os, platform, statistics
import torch


def cpu_name():
    try: return next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration): return platform.processor() or 'unknown CPU'


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--batches', type=int, default=60, help='training batches of 64 per run (default 60)')
    p.add_argument('--rounds', type=int, default=2, help='rounds of one run each (default 2)')
    p.add_argument('--json', action='store_true', help='end with a JSON line of the result')
    p.add_argument('--smoke', action='store_true', help='2 batches, 1 round, an untrained autoencoder: only checks that the script works')
    a = p.parse_args()
    if a.smoke: a.batches, a.rounds = 2, 1
    if a.batches < 1 or a.rounds < 1: p.error('--batches and --rounds must be at least 1')
    from miniai.ddpm import UNet, train_ddpm
    from miniai.autoencoder import pretrained_vae, kl_autoencoder
    from miniai.latent import fashion_latents, latent_unet, train_latent_ddpm
    from miniai.learner import set_seed
    n = a.batches * 64
    vae = kl_autoencoder().eval() if a.smoke else pretrained_vae()[0]   # the cost per batch does not depend on the weights
    lat = fashion_latents(vae, n_train=n, n_test=64)
    runs = dict(pixel=lambda: train_ddpm(UNet(), 1, n_train=n, n_valid=64),
                latent=lambda: train_latent_ddpm(latent_unet(), lat, 1, n_train=n, n_valid=64))
    print(f"{a.batches} batches of 64 per run, {a.rounds} round(s), {torch.get_num_threads()} thread(s), on {cpu_name()} "
          f"({os.cpu_count()} cores)", flush=True)
    per_epoch = {k: [] for k in runs}
    for r in range(a.rounds):
        for k in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            set_seed(42)
            rec = runs[k]()
            per_epoch[k].append(rec['minutes'] * 60_000 / rec['n_train'])
            print(f"round {r}: {k:>6} {rec['minutes'] * 60:6.1f} s for {rec['n_train']:,} images "
                  f"-> {per_epoch[k][-1]:5.2f} min per epoch ({rec['autocast']})", flush=True)
    med = {k: statistics.median(v) for k, v in per_epoch.items()}
    ratio = med['pixel'] / med['latent']
    print(f"per epoch of 60,000: pixel U-Net {med['pixel']:.2f} min, latent U-Net {med['latent']:.2f} min: "
          f"{ratio:.1f}× cheaper in latents")
    if a.json:
        print(json.dumps(dict(ratio=ratio, pixel_epoch_min=med['pixel'], latent_epoch_min=med['latent'],
                              batches=a.batches, rounds=a.rounds, cpu=cpu_name(), threads=torch.get_num_threads())))


if __name__ == '__main__': main()

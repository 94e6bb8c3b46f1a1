"""DDPM training batch size: the same U-Net, recipe, seed and number of epochs with different batch sizes, trained side by side
(one process and one torch thread each, at the same time, so the machine's speed drifts hit both alike), then scored with FID.

    .venv/bin/python bench/ddpm_batch_size.py [--sizes 128 64] [--epochs 3] [--samples 1000] [--steps 50] [--smoke]

Each run is `train_ddpm(UNet(), epochs, bs=...)`; its last weights and their moving average (`EMACB`, decay 0.999) each sample
`--samples` images with DDIM η = 1 (the sampler notebook 12 finds best), scored by FID against 10,000 training images with notebook
12's features, beside the real-vs-real floor for the same number of samples. This is how `train_ddpm`'s batch size of 64 was chosen
(three epochs each, 2026-11-22, 2-core CPU; floor 0.67):

     bs  steps  minutes  train loss  FID last  FID EMA
    128   1407     20.2      0.0272      5.63     6.06
     64   2814     20.5      0.0264      4.38     4.15
"""
import argparse, json, os, subprocess, sys, time
from functools import partial
import torch


def run_one(bs, epochs, samples, steps, n_train):
    "Train and score one batch size; print a JSON line with the results."
    torch.set_num_threads(1)
    from miniai.ddpm import UNet, NoiseSchedule, train_ddpm, diffusion_sample, to_pixels
    from miniai.ddpm import ddim_step
    from miniai.ddim_fid import fashion_classifier, fashion_features, fid
    from miniai.data import load_fashion_mnist
    from miniai.learner import set_seed
    set_seed(42); model = UNet()
    rec = train_ddpm(model, epochs, bs=bs, n_train=n_train, seed=42)
    ema = {k: v.clone() for k, v in model.state_dict().items()}            # train_ddpm leaves the average in the model
    model.eval()
    clf, _ = fashion_classifier()
    xt, _, xv, _ = load_fashion_mnist()
    ref = fashion_features(clf, (xt[:10000].float() / 255).unsqueeze(1))
    floor = fid(fashion_features(clf, (xv[:samples].float() / 255).unsqueeze(1)), ref)
    def score(weights):
        model.load_state_dict(weights)
        x = diffusion_sample(model, NoiseSchedule.cosine(), samples, steps, step_fn=partial(ddim_step, eta=1.), seed=0, progress=False)
        return fid(fashion_features(clf, to_pixels(x)), ref)
    print(json.dumps(dict(bs=bs, steps=epochs * -(-rec['n_train'] // bs), minutes=rec['minutes'], train_loss=rec['hist'][-1]['train_loss'],
                          fid_last=score(rec['last_weights']), fid_ema=score(ema), floor=floor)), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--sizes', type=int, nargs='+', default=[128, 64]); p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--samples', type=int, default=1000); p.add_argument('--steps', type=int, default=50)
    p.add_argument('--n-train', type=int, default=None, help='first N training images (default: all 60,000)')
    p.add_argument('--one', type=int, help=argparse.SUPPRESS)
    p.add_argument('--smoke', action='store_true', help='two tiny runs, only to check that the script works (use with MINIAI_QUICK=1)')
    a = p.parse_args()
    if a.smoke: a.sizes, a.epochs, a.samples, a.steps, a.n_train = [16, 8], 1, 32, 2, 64
    if a.one: return run_one(a.one, a.epochs, a.samples, a.steps, a.n_train)
    from miniai.ddim_fid import fashion_classifier
    fashion_classifier()                                          # trained and cached here first, not in every run
    print(f'batch sizes {a.sizes}, {a.epochs} epochs each, side by side; FID of {a.samples} DDIM η=1 {a.steps}-step samples', flush=True)
    t0, env = time.perf_counter(), dict(os.environ, OMP_NUM_THREADS='1')
    args = ['--epochs', str(a.epochs), '--samples', str(a.samples), '--steps', str(a.steps)] + (['--n-train', str(a.n_train)] if a.n_train else [])
    procs = [subprocess.Popen([sys.executable, __file__, '--one', str(bs)] + args, env=env, stdout=subprocess.PIPE, text=True)
             for bs in a.sizes]
    results = []
    for bs, pr in zip(a.sizes, procs):
        out, _ = pr.communicate()
        if pr.returncode: sys.exit(f'the run with batch size {bs} failed (exit code {pr.returncode}); its output:\n{out}')
        results.append(json.loads(out.strip().splitlines()[-1]))
    print(f'{"bs":>5} {"steps":>6} {"minutes":>8} {"train loss":>11} {"FID last":>9} {"FID EMA":>8}')
    for r in results:
        print(f'{r["bs"]:>5} {r["steps"]:>6} {r["minutes"]:>8.1f} {r["train_loss"]:>11.4f} {r["fid_last"]:>9.2f} {r["fid_ema"]:>8.2f}')
    print(f'floor (real test vs real training images, {a.samples} samples): {results[0]["floor"]:.2f}; '
          f'wall time {(time.perf_counter() - t0) / 60:.1f} min')


if __name__ == '__main__':
    main()

"The benchmark scripts run end to end at a tiny size (`--smoke`), so that they cannot rot as the package changes."
import os, subprocess, sys
from pathlib import Path
import pytest

BENCH = Path(__file__).resolve().parent.parent/'bench'

@pytest.mark.parametrize('script', sorted(p.name for p in BENCH.glob('*.py')))
def test_bench_script_runs_smoke(script, tmp_path):
    env = dict(os.environ, MINIAI_QUICK='1', MINIAI_CACHE=str(tmp_path), OMP_NUM_THREADS='1')
    r = subprocess.run([sys.executable, BENCH/script, '--smoke'], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{script} --smoke failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    assert r.stdout.strip(), f"{script} --smoke printed nothing"

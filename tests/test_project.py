"Project-level checks: notebooks and package in sync, notebooks clean, README, dependencies, the docs site, the wheel."
import ast, configparser, json, re, shutil, subprocess, sys, sysconfig, venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NBS = sorted((ROOT/'nbs').glob('[0-9][0-9]*_*.ipynb'))  # 00_data ... 07a_activations ...
MODULES = sorted(p.stem for p in (ROOT/'miniai').glob('*.py') if not p.stem.startswith('_'))
CFG = configparser.ConfigParser(delimiters=['=']); CFG.read(ROOT/'settings.ini')


@pytest.fixture(scope='module')
def copy_of_project(tmp_path_factory):
    "The notebooks, settings and package copied, so checks that rewrite files never touch the work tree."
    d = tmp_path_factory.mktemp('proj')
    for f in ('settings.ini', 'setup.py', 'README.md'): shutil.copy(ROOT/f, d/f)
    for f in ('nbs', 'miniai'): shutil.copytree(ROOT/f, d/f, ignore=shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints'))
    return d


def test_package_is_in_sync_with_notebooks(copy_of_project):
    subprocess.run([BIN/'nbdev_export'], cwd=copy_of_project, check=True)
    ours = {p.name: p.read_text() for p in (ROOT/'miniai').glob('*.py')}
    exported = {p.name: p.read_text() for p in (copy_of_project/'miniai').glob('*.py')}
    changed = sorted(n for n in ours.keys() | exported.keys() if ours.get(n) != exported.get(n))
    assert not changed, f"nbdev_export changes {changed}: edit the notebooks, run nbdev_export, commit both"


def test_notebooks_are_clean(copy_of_project):
    subprocess.run([BIN/'nbdev_clean'], cwd=copy_of_project, check=True)
    dirty = [p.name for p in sorted((copy_of_project/'nbs').glob('*.ipynb')) if p.read_text() != (ROOT/'nbs'/p.name).read_text()]
    assert not dirty, f"notebooks not clean: {dirty}: run nbdev_clean and commit"


def test_notebooks_are_committed_executed():
    for p in NBS:
        code = [c for c in json.loads(p.read_text())['cells'] if c['cell_type'] == 'code' and ''.join(c['source']).strip()]
        shown = sum(bool(c.get('outputs')) for c in code)
        assert shown >= 0.3*len(code), f"{p.name}: only {shown} of {len(code)} code cells have outputs; commit it executed in full mode"


def _calls(node):
    "The calls `node` makes when run: what function and class bodies do is left out (defining them runs nothing)."
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)): return
    if isinstance(node, ast.Call): yield node
    for child in ast.iter_child_nodes(node): yield from _calls(child)

def test_cells_the_docs_build_runs_only_import():
    "The docs build (nbdev) runs every cell with an import in it, in full mode: such a cell must not also compute."
    heavy = []
    for p in NBS:
        for c in json.loads(p.read_text())['cells']:
            src = ''.join(c['source'])
            if c['cell_type'] != 'code' or re.search(r'^#\|\s*(export|exports|exporti|exec_doc)\b', src, re.M): continue
            try: tree = ast.parse('\n'.join(l for l in src.splitlines() if not l.lstrip().startswith(('%', '!'))))
            except SyntaxError: continue
            if not any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(tree)): continue
            calls = [ast.unparse(n.func) for n in _calls(tree)]
            if bad := [f for f in calls if not f.startswith('warnings.')]: heavy.append(f"{p.name} cell {c.get('id')}: {bad[:3]}")
    assert not heavy, f"cells with imports that also run code (the docs build would run them in full mode): {heavy}"


def test_readme_in_step_with_index_and_lists_every_notebook():
    sys.path.insert(0, str(ROOT/'tools'))
    from make_readme import readme
    assert (ROOT/'README.md').read_text() == readme(), 'README.md differs from nbs/index.ipynb: run python tools/make_readme.py'
    for p in NBS: assert f'(nbs/{p.name})' in readme(), f'{p.name} is not listed in nbs/index.ipynb'
    assert readme().count('```sh\nbash tools/run.sh ') == 2


def _imports(path):
    "Top-level names of the modules a file imports, and packages it locates with find_spec('name')."
    tree, names = ast.parse(path.read_text()), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import): names |= {a.name.split('.')[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0: names.add(node.module.split('.')[0])
    names |= set(re.findall(r"find_spec\('(\w+)'\)", path.read_text()))
    return names


def test_declared_dependencies_match_imports():
    stdlib = sys.stdlib_module_names | {'__future__'}
    used = set().union(*(_imports(ROOT/'miniai'/f'{m}.py') for m in MODULES)) - stdlib - {'miniai'}
    declared = {re.split('[<>=!~ ]', r)[0] for r in CFG['DEFAULT']['requirements'].split()}
    extras = {re.split('[<>=!~ ]', r)[0] for n in CFG['DEFAULT'].get('extras', '').split()
              for r in CFG['DEFAULT'][f'{n}_requirements'].split()}
    from miniai.data import MNIST_PACKAGE
    assert MNIST_PACKAGE in extras, f"{MNIST_PACKAGE} (read by load_mnist) is not in an extra of settings.ini"
    assert used == declared, f"imported but undeclared: {used-declared}; declared but unused: {declared-used}"


def test_quarto_config_is_what_nbdev_docs_writes_and_complete(copy_of_project):
    "nbs/_quarto.yml, nbdev.yml and sidebar.yml are what `nbdev_docs` writes; every file they name exists."
    code = ('from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar; '
            'refresh_quarto_yml(); nbdev_sidebar.__wrapped__(force=True)')
    subprocess.run([sys.executable, '-c', code], cwd=copy_of_project, check=True)
    for f in ('_quarto.yml', 'nbdev.yml', 'sidebar.yml'):
        assert (copy_of_project/'nbs'/f).read_text() == (ROOT/'nbs'/f).read_text(), (
            f"nbs/{f} differs from what nbdev writes: run python -c "
            "'from nbdev.quarto import *; refresh_quarto_yml(); nbdev_sidebar(force=True)'")
    import yaml
    q = yaml.safe_load((ROOT/'nbs'/'_quarto.yml').read_text())
    named = [q['format']['html']['css'], *q['metadata-files']]
    named += yaml.safe_load((ROOT/'nbs'/'sidebar.yml').read_text())['website']['sidebar']['contents']
    missing = [f for f in named if not (ROOT/'nbs'/f).exists()]
    assert not missing, f'nbs/_quarto.yml or sidebar.yml names files that do not exist: {missing}'
    assert sorted(p.name for p in NBS) + ['index.ipynb'] == sorted(named[3:])


def test_wheel_installs_into_fresh_venv_and_imports(tmp_path):
    dist = tmp_path/'dist'
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q', '-w', dist, ROOT], check=True)
    wheel, = dist.glob('miniai-*.whl')
    env = tmp_path/'venv'
    venv.create(env, with_pip=True)
    py = env/'bin'/'python'
    subprocess.run([py, '-m', 'pip', 'install', '-q', 'torch==2.13.0', f'{wheel}[mnist]'], check=True)  # the MNIST extra: load_mnist
    code = ('import importlib, miniai; ' + '; '.join(f'importlib.import_module("miniai.{m}")' for m in MODULES) +
            '; from miniai.data import load_mnist; assert len(load_mnist()[0]) == 4000; print(miniai.__version__, miniai.__file__)')
    out = subprocess.run([py, '-c', code], check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    version, where = out.split()
    assert version == CFG['DEFAULT']['version'] and str(env) in where  # the installed wheel, not the repo

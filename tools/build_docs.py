"""Build the course site offline into _docs/: nbdev processes the notebooks, mkdocs-material renders them.

Quarto, which `nbdev_docs` uses, cannot be installed on these machines; the nbdev/Quarto config in nbs/ is
kept so `nbdev_docs` still works where it can. The site needs nothing from the internet: no web fonts, no CDN;
formulas are typeset by KaTeX, shipped in tools/vendor/katex.

Usage: python tools/build_docs.py [--site-dir DIR]
"""
import argparse, json, os, re, shutil, subprocess, sys
from pathlib import Path

import yaml
from nbdev.config import get_config
from nbdev.serve import proc_nbs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT/'tools'))
from api_docs import api_entry, find_symbol  # noqa: E402

SITE_ASSETS, KATEX = ROOT/'tools'/'site', ROOT/'tools'/'vendor'/'katex'
NB_NAME = re.compile(r'^(\d+[a-z]?)_(\w+)$')  # 07a_activations -> number 07a, name activations
NB_LINK = re.compile(r'(\]\(|href=")((?:\d+[a-z]?_\w+|index)\.ipynb)')  # a link to a notebook: ](05_x.ipynb)
QUARTO_ATTRS = re.compile(r'\{target="_blank"[^}]*\}')  # Quarto-only link attributes


def page_name(nb: Path) -> str:
    "The page nbdev gives a notebook: 01_matmul.ipynb -> matmul.html, 07a_x.ipynb -> x.html"
    return 'index.html' if nb.stem == 'index' else re.sub(r'^\d+[a-zA-Z0-9]*_', '', nb.stem.lower()) + '.html'


def nb_number(nb: Path) -> str:
    "The number the course gives a notebook: 05 for 05_convolutions, 07a for 07a_activations ('' for index)."
    m = NB_NAME.match(nb.stem)
    return m.group(1) if m else ''


def src(cell) -> str: return cell['source'] if isinstance(cell['source'], str) else ''.join(cell['source'])


def _no_directives(s: str) -> str:
    return '\n'.join(l for l in s.splitlines() if not l.startswith('#|')).strip()


def _modules(nb: dict) -> list:
    "miniai modules to look names up in: the notebook's own first, then every other one."
    import miniai._modidx as idx
    code = '\n'.join(src(c) for c in nb['cells'] if c['cell_type'] == 'code')
    own = re.findall(r'^#\|\s*default_exp\s+(\S+)', code, re.M)
    return list(dict.fromkeys([f'miniai.{m}' for m in own] + sorted(idx.d['syms'])))


def api_cell(cell, modules) -> dict | None:
    "A `show_doc(name)` cell as a markdown cell with the entry (see tools/api_docs.py); None for other cells."
    if not (m := re.fullmatch(r'show_doc\(([\w.]+)\)', _no_directives(src(cell)))): return None
    obj = find_symbol(m.group(1), modules)
    if obj is None:
        raise ValueError(f"show_doc({m.group(1)}): no such name in {modules[0]} or another miniai module")
    return {'cell_type': 'markdown', 'metadata': {}, 'source': api_entry(obj, m.group(1))}


def for_mkdocs(nb: dict, number: str, pages: dict, doc_url: str) -> tuple[dict, str]:
    "A notebook processed by nbdev, for mkdocs-jupyter: title, API entries, directives honoured, local links."
    def fix(s: str) -> str:  # links to the published docs and to notebooks -> pages of this site
        s = NB_LINK.sub(lambda m: m.group(1) + pages.get(m.group(2), m.group(2)), s.replace(doc_url, ''))
        return QUARTO_ATTRS.sub('', s)
    modules, cells, title = _modules(nb), [], None
    for c in nb['cells']:
        s = src(c)
        if c['cell_type'] == 'raw' and s.startswith('---'):  # Quarto front matter -> a title with the number
            meta = yaml.safe_load(s.strip().strip('-'))
            title = meta.get('title', '')
            heading = f"{number} · {title}" if number else title
            head = f"# {heading}\n\n> {meta.get('description', '')}"
            c = {'cell_type': 'markdown', 'metadata': {}, 'source': head}
        elif c['cell_type'] == 'code':
            directives = dict(re.findall(r'^#\|\s*([\w-]+):?\s*(.*)$', s, re.M))
            if 'hide' in directives or directives.get('include') == 'false': continue
            if (entry := api_cell(c, modules)) is not None:
                cells.append(dict(entry, source=fix(entry['source']))); continue
            c = dict(c, source=_no_directives(s))
            if not c['source'] and not c.get('outputs'): continue
            if directives.get('echo') == 'false':
                c['metadata'] = dict(c.get('metadata', {}), tags=['remove_input'])
            for o in c.get('outputs', []):
                if 'text/markdown' in (data := o.get('data', {})):
                    data['text/markdown'] = fix(src({'source': data['text/markdown']}))
        else: c = dict(c, source=fix(s))
        cells.append(c)
    return dict(nb, cells=cells), title


def mkdocs_config(cfg, docs_src: Path, site_dir: Path, nav: list) -> dict:
    jupyter = {'include_source': True, 'execute': False, 'no_prompt': True,
               'ignore_h1_titles': True,  # the titles given in `nav`, with the notebook numbers
               'remove_tag_config': {'remove_input_tags': ['remove_input']}}
    return {
        'site_name': cfg.title, 'site_description': cfg.description,
        'docs_dir': str(docs_src), 'site_dir': str(site_dir), 'use_directory_urls': False,
        'theme': {'name': 'material', 'font': False,  # no Google fonts: the reader's own fonts
                  'features': ['navigation.sections', 'navigation.footer', 'search.highlight',
                               'content.code.copy']},
        'plugins': ['search', {'mkdocs-jupyter': jupyter}],
        'hooks': [str(SITE_ASSETS/'mkdocs_hooks.py')],
        'extra_css': ['_katex/katex.min.css', 'stylesheets/extra.css'],
        'extra_javascript': ['_katex/katex.min.js', '_katex/auto-render.min.js', '_katex/math.js'],
        'nav': nav}


def build(site_dir: Path) -> Path:
    cfg = get_config(str(ROOT/'settings.ini'))
    proc = proc_nbs(path=str(ROOT/cfg.nbs_path), n_workers=1)
    docs_src = ROOT/'_proc_mkdocs'
    shutil.rmtree(docs_src, ignore_errors=True); docs_src.mkdir()
    nbs = sorted(proc.glob('*.ipynb'), key=lambda p: (p.stem != 'index', p.stem))
    pages = {p.name: page_name(p) for p in nbs}
    doc_url = f"{cfg.doc_host}{cfg.doc_baseurl}".rstrip('/') + '/'
    nav = []
    for p in nbs:
        nb, title = for_mkdocs(json.loads(p.read_text()), nb_number(p), pages, doc_url)
        out = docs_src/pages[p.name].replace('.html', '.ipynb')
        out.write_text(json.dumps(nb))
        nav.append({'Home' if p.stem == 'index' else f"{nb_number(p)} · {title or p.stem}": out.name})
    shutil.copytree(KATEX, docs_src/'_katex', ignore=shutil.ignore_patterns('README.md'))
    shutil.copy(SITE_ASSETS/'math.js', docs_src/'_katex'/'math.js')
    (docs_src/'stylesheets').mkdir()
    shutil.copy(SITE_ASSETS/'extra.css', docs_src/'stylesheets'/'extra.css')
    config_file = ROOT/'_proc_mkdocs.yml'
    config = mkdocs_config(cfg, docs_src, site_dir, nav)
    config_file.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    env = dict(os.environ, NO_MKDOCS_2_WARNING='1')
    subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--quiet', '-f', str(config_file)],
                   check=True, cwd=ROOT, env=env)
    return site_dir


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--site-dir', default=str(ROOT/'_docs'), help='where to write the site (default: _docs/)')
    site = build(Path(ap.parse_args().site_dir).resolve())
    print(f"Docs site built: {site}/index.html")

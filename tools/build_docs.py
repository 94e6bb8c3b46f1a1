"""Build the course site offline into _docs/: nbdev processes the notebooks (show_doc API entries), mkdocs-material renders them.

Quarto, which `nbdev_docs` uses, cannot be installed on these machines; the nbdev/Quarto config in nbs/ is kept so
`nbdev_docs` still works where it can. Usage: python tools/build_docs.py [--site-dir DIR]
"""
import argparse, json, os, re, shutil, subprocess, sys
from pathlib import Path

import jupyter_server_mathjax, yaml
from nbdev.config import get_config
from nbdev.serve import proc_nbs

ROOT = Path(__file__).resolve().parent.parent
NB_LINK = re.compile(r'\b(\d\d_\w+|index)\.ipynb')  # links between notebooks: 01_matmul.ipynb
QUARTO_ATTRS = re.compile(r'\{target="_blank"[^}]*\}')  # Quarto-only link attributes in show_doc output


def page_name(nb: Path) -> str:
    "The page nbdev/Quarto would give a notebook: 01_matmul.ipynb -> matmul.html."
    return 'index.html' if nb.stem == 'index' else re.sub(r'^\d+_', '', nb.stem) + '.html'


def src(cell) -> str: return cell['source'] if isinstance(cell['source'], str) else ''.join(cell['source'])


def for_mkdocs(nb: dict, pages: dict, doc_url: str) -> tuple[dict, str]:
    "Turn a notebook processed by nbdev into one mkdocs-jupyter renders: title cell, directives honoured, links local."
    fix = lambda s: QUARTO_ATTRS.sub('', NB_LINK.sub(lambda m: pages.get(m.group(0), m.group(0)), s.replace(doc_url, '')))
    cells, title = [], None
    for c in nb['cells']:
        s = src(c)
        if c['cell_type'] == 'raw' and s.startswith('---'):  # Quarto front matter -> a title cell
            meta = yaml.safe_load(s.strip().strip('-'))
            title = meta.get('title', '')
            c = {'cell_type': 'markdown', 'metadata': {}, 'source': f"# {title}\n\n> {meta.get('description', '')}"}
        elif c['cell_type'] == 'code':
            directives = dict(re.findall(r'^#\|\s*([\w-]+):?\s*(.*)$', s, re.M))
            if 'hide' in directives or directives.get('include') == 'false': continue
            c = dict(c, source='\n'.join(l for l in s.splitlines() if not l.startswith('#|')).strip())
            if not c['source'] and not c.get('outputs'): continue
            if directives.get('echo') == 'false': c['metadata'] = dict(c.get('metadata', {}), tags=['remove_input'])
            for o in c.get('outputs', []):
                if 'text/markdown' in o.get('data', {}): o['data']['text/markdown'] = fix(src({'source': o['data']['text/markdown']}))
        else: c = dict(c, source=fix(s))
        cells.append(c)
    return dict(nb, cells=cells), title


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
        nb, title = for_mkdocs(json.loads(p.read_text()), pages, doc_url)
        out = docs_src/pages[p.name].replace('.html', '.ipynb')
        out.write_text(json.dumps(nb))
        label = 'Home' if p.stem == 'index' else f"{p.stem[:2]} · {title or p.stem}"
        nav.append({label: out.name})
    mathjax = Path(jupyter_server_mathjax.__file__).parent/'static'  # MathJax 2, shipped in a wheel: no CDN needed
    shutil.copytree(mathjax, docs_src/'_mathjax')
    (docs_src/'_mathjax'/'setup.js').write_text(
        "window.MathJax = {tex2jax: {inlineMath: [['$','$'], ['\\\\(','\\\\)']], processEscapes: true}, messageStyle: 'none'};\n")
    (docs_src/'stylesheets').mkdir()
    (docs_src/'stylesheets'/'extra.css').write_text('.md-grid { max-width: 1500px; }\n.jp-OutputArea-output table { font-size: 0.8rem; }\n')
    config = {
        'site_name': cfg.title, 'site_description': cfg.description,
        'docs_dir': str(docs_src), 'site_dir': str(site_dir), 'use_directory_urls': False,
        'theme': {'name': 'material', 'features': ['navigation.sections', 'navigation.footer', 'search.highlight', 'content.code.copy']},
        'plugins': ['search', {'mkdocs-jupyter': {'include_source': True, 'execute': False, 'remove_tag_config': {'remove_input_tags': ['remove_input']}}}],
        'extra_css': ['stylesheets/extra.css'], 'extra_javascript': ['_mathjax/setup.js', '_mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full'],
        'nav': nav}
    (ROOT/'_proc_mkdocs.yml').write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    env = dict(os.environ, NO_MKDOCS_2_WARNING='1')
    subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--quiet', '-f', str(ROOT/'_proc_mkdocs.yml')], check=True, cwd=ROOT, env=env)
    return site_dir


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--site-dir', default=str(ROOT/'_docs'), help='where to write the site (default: _docs/)')
    site = build(Path(ap.parse_args().site_dir).resolve())
    print(f"Docs site built: {site}/index.html")

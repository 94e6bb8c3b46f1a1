"""mkdocs hooks for the course site (tools/build_docs.py names this file in the mkdocs config).

mkdocs-jupyter puts a MathJax 2 loader and a mermaid import from a CDN into every notebook page: the site
typesets its maths with KaTeX (shipped with it) and has no diagrams, so both are taken out. It also inlines
the same 600 kB of JupyterLab styles into every page: they go into one shared stylesheet per distinct block,
which the browser loads once. Then every page is checked to load nothing from another host: a script,
stylesheet, font or image from the internet fails the build.
"""
import hashlib, re
from pathlib import Path

MATHJAX = re.compile(r'<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->', re.S)
MERMAID = re.compile(r'<script type="module">\s*document\.addEventListener\("DOMContentLoaded", '
                     r'async \(\) => \{\s*const diagrams = document\.querySelectorAll\("\.jp-Mermaid'
                     r'.*?</script>', re.S)
STYLE = re.compile(r'<style type="text/css">(.*?)</style>', re.S)
COPY_BUTTON = re.compile(r'<div class="(zeroclipboard-container|clipboard-copy-txt)"')
# what a browser fetches by itself: <script src>, <img src>, <link href> (stylesheet, preconnect, icon...),
# CSS url() and @import, and a JavaScript import() from another host
_HOST = r'''["']?(?:https?:)?//'''
REMOTE = re.compile('|'.join([rf'''<(?:script|img|iframe|source|video|audio)\b[^>]*\bsrc={_HOST}''',
                              rf'''<link\b[^>]*\bhref={_HOST}''', rf'''url\(\s*{_HOST}''',
                              rf'''@import\s+(?:url\()?\s*{_HOST}''', rf'''\bimport\(\s*{_HOST}''']), re.I)


def _shared_stylesheets(output: str, page, site_dir: Path) -> str:
    "Each big inline <style> as a link to one file of the site (at the same place: the cascade is unchanged)."
    up = '../' * page.url.count('/')
    def link(m):
        css = m.group(1)
        if len(css) < 10_000: return m.group(0)
        name = f"_styles/{hashlib.sha1(css.encode()).hexdigest()[:16]}.css"
        f = site_dir/name
        if not f.exists():
            f.parent.mkdir(parents=True, exist_ok=True)
            tmp = f.with_suffix('.tmp'); tmp.write_text(css); tmp.replace(f)
        return f'<link rel="stylesheet" href="{up}{name}">'
    return STYLE.sub(link, output)


def on_page_content(html: str, page, config, files) -> str:
    "Keep the copy buttons and the hidden copy of each cell's code out of the search index."
    return COPY_BUTTON.sub(r'<div class="\1" data-search-exclude', html)


def on_post_page(output: str, page, config) -> str:
    output = MATHJAX.sub('', output)
    output = MERMAID.sub('', output)
    output = _shared_stylesheets(output, page, Path(config['site_dir']))
    if m := REMOTE.search(output):
        raise ValueError(f"{page.file.src_path}: the page would load something from the internet: "
                         f"{output[m.start():m.start() + 160]!r}; the site must work offline")
    return output

"""The course site: built once from the notebooks, read as HTML, and opened in headless Chromium.

The browser checks are in tools/check_site.py (also a command: `python tools/check_site.py _docs`).
Screenshots of the home page and of notebook 11's page are saved to _docs_shots/ to look at.
"""
import json, re, shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT/'tools'))
from build_docs import page_name  # noqa: E402
from check_site import check_site, expected_formulas, find_chromium, formulas_in, problems  # noqa: E402

NBS = sorted((ROOT/'nbs').glob('[0-9][0-9]*_*.ipynb'))
SHOTS = ROOT/'_docs_shots'
SEARCH = {'DDIM': 'ddim_fid.html', 'Learner': 'learner.html'}  # a word, and a page its search must find
# formulas that MathJax 2 could not typeset (a prime): 08's L2 term, 12's DDIM update
MUST_TYPESET = {'optimizers.html': r"L' = L + \frac{wd}{2}\sum_i w_i^2",
                'ddim_fid.html': r"x_s = \sqrt{\bar\alpha_s}"}


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The site, built once for this module's tests."
    d = tmp_path_factory.mktemp('site')/'_docs'
    subprocess.run([sys.executable, ROOT/'tools'/'build_docs.py', '--site-dir', d], check=True, cwd=ROOT)
    return d


@pytest.fixture(scope='module')
def browser_report(site):
    "Every page of the site visited in headless Chromium (tools/check_site.py); screenshots in _docs_shots/."
    find_chromium()  # a clear error if the browser is missing
    shutil.rmtree(SHOTS, ignore_errors=True)
    return check_site(site, SHOTS, search=tuple(SEARCH))


def _exported_defs(nb: Path) -> list:
    sources = [''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code']
    exported = '\n'.join(s for s in sources if s.startswith('#| export'))
    return re.findall(r'^(?:def|class) ([a-zA-Z]\w*)', exported, re.M)


def _has_plots(nb: Path) -> bool:
    cells = json.loads(nb.read_text())['cells']
    return any('image/png' in o.get('data', {}) for c in cells for o in c.get('outputs', []))


def test_a_page_per_notebook_with_its_number_and_api_entries(site):
    home = (site/'index.html').read_text()
    assert 'The notebooks' in home and (site/'search'/'search_index.json').exists()
    for nb in NBS:
        page = site/page_name(nb)
        assert page.exists(), f'no page for {nb.name}'
        assert f'href="{page.name}"' in home, f'{page.name} missing from the navigation'
        text, number = page.read_text(), nb.stem.split('_')[0]
        assert re.search(rf'<title>{number} · ', text), f'{page.name}: title not starting with {number}'
        assert re.search(rf'>\s*{number} · ', home), f'{page.name}: the navigation does not show {number}'
        if _has_plots(nb): assert 'data:image/png' in text, f'{page.name}: plots missing'
        for name in _exported_defs(nb):
            assert f'<h3 id="{name.lower()}"' in text, f'{page.name}: no API entry for {name}'
    assert page_name(Path('07a_activations.ipynb')) == 'activations.html'
    assert page_name(Path('12_ddim_fid.ipynb')) == 'ddim_fid.html'


def test_api_entries_read_as_python_with_a_table_of_docments(site):
    "Signatures without raw links, NoneType, `(*args, **kwargs)` or borrowed docstrings; no output prompts."
    for page in sorted(site.glob('*.html')):
        text = page.read_text()
        code = [re.sub('<[^>]+>', '', p) for p in re.findall(r'<pre>(.*?)</pre>', text, re.S)]
        raw = [m for c in code for m in re.findall(r'\[`?\w+`?\]\([\w./-]+\.html[^)]*\)', c)]
        assert not raw, f'{page.name}: markdown links shown raw in code: {raw[:3]}'
        for bad in ('Call self as a function', 'Out[', 'Out&nbsp;[', 'In&nbsp;[', '{target=',
                    '<td><code>NoneType'):
            assert bad not in text, f'{page.name}: {bad!r} on the page'
        for sig in re.findall(r'<h3 id="[^"]+">.*?</h3><div class="highlight"><pre>(.*?)</pre>', text, re.S):
            plain = re.sub('<[^>]+>', '', sig)
            assert 'NoneType' not in plain and '(*args, **kwargs)' not in plain, f'{page.name}: {plain[:120]}'
    learner = (site/'learner.html').read_text()
    # Learner's parameter table: docments, with links to the pages that define what they name
    assert re.search(r'<td><code>dls</code></td>.*?<a href="datasets.html#dataloaders"', learner, re.S)
    # a class without an __init__ of its own shows its base, not (*args, **kwargs)
    assert re.search(r'<span class="nc">TrainCB</span><span class="p">\(</span>'
                     r'<span class="n">Callback</span>', learner)


def test_home_page_names_the_notebook_to_open_and_what_is_coming(site):
    home = (site/'index.html').read_text()
    assert '<code>00_data.ipynb</code>' in home  # the file to open in JupyterLab, not its page
    for n in range(13, 21):
        if any(p.name.startswith(f'{n}_') for p in NBS): continue  # written: listed with the others above
        assert re.search(rf'<td>{n}</td>\s*<td>[^<]*\(coming\)</td>', home), f'{n} not marked as coming'


def test_site_loads_nothing_from_the_internet(site):
    "No web fonts, no CDN, no MathJax in any page or stylesheet (the browser test watches every request)."
    for f in sorted(site.rglob('*')):
        if f.suffix in ('.html', '.css'):
            text = f.read_text(errors='replace').lower()
            for bad in ('fonts.googleapis', 'fonts.gstatic', 'cdnjs', 'cdn.jsdelivr', 'unpkg.com', 'mathjax'):
                assert bad not in text, f'{f.relative_to(site)} mentions {bad}'


def test_every_page_in_a_browser(browser_report):
    "Formulas typeset, images loaded, nothing cut off, no request off 127.0.0.1, search works."
    rep = browser_report
    assert len(rep['pages']) == len(NBS) + 1, sorted(rep['pages'])
    bad = problems(rep, expect_search=SEARCH)
    assert not bad, '\n'.join(bad)
    for page, tex in MUST_TYPESET.items():
        assert any(t.startswith(tex) for t in rep['pages'][page]['tex']), f'{page}: {tex!r} not typeset'
    assert sum(p['formulas'] for p in rep['pages'].values()) > 200
    assert sum(p['images'] for p in rep['pages'].values()) > 50
    assert rep['pages']['ddpm.html']['h1'].startswith('11 · DDPM')
    for shot in ('index.png', 'ddpm.png', 'ddpm_maths.png', 'search.png'):
        assert (SHOTS/shot).stat().st_size > 10_000, shot


def test_browser_check_finds_what_is_wrong(site, tmp_path):
    "The checks can fail: a bad formula, TeX left as text, a missing image, another host, code that scrolls."
    bad = tmp_path/'site'
    shutil.copytree(site, bad, ignore=shutil.ignore_patterns('*.ipynb'))
    for f in bad.glob('*.html'):
        if f.name not in ('index.html', 'matmul.html'): f.unlink()
    page = bad/'matmul.html'
    html = page.read_text()
    assert html.count('</article>') == 1
    broken = ('<p>A broken formula $\\frac{1}{\\nosuchmacro}$ and an unclosed one \\(x.</p>'
              '<img src="no_such_plot.png"><img src="http://example.com/plot.png">'
              f'<pre style="white-space: pre !important">{"x = 1  # " + "long " * 60}</pre>')
    page.write_text(html.replace('</article>', broken + '</article>'))
    report = check_site(bad, None, search=('matmul',))
    found = '\n'.join(problems(report, expect_search={'matmul': 'nosuch.html'}))
    for expected in ('formulas KaTeX cannot typeset', 'TeX left as text', 'images not loaded',
                     'request to another host: http://example.com', 'code scrolls sideways',
                     "searching 'matmul' does not find nosuch.html"):
        assert expected in found, f'not reported: {expected}\n{found}'


def test_formula_counting_follows_katex_rules():
    assert formulas_in(r"$a$ and $$b$$, \(c\) then \[d\]") == ['a', 'b', 'c', 'd']
    assert formulas_in(r"$x_{a$b}$ and $\$5$") == ['x_{a$b}', r'\$5']  # $ in braces or escaped: not the end
    page = '<p>$a$</p><pre>$b$</pre><code>$c$</code><div class="clipboard-copy-txt">$d$</div>'
    assert expected_formulas(page) == ['a']


def test_build_refuses_a_page_that_loads_from_the_internet():
    "tools/site/mkdocs_hooks.py fails the build on a script, stylesheet, font or image from another host."
    sys.path.insert(0, str(ROOT/'tools'/'site'))
    from mkdocs_hooks import on_post_page
    class Page:
        url, file = 'x.html', type('F', (), {'src_path': 'x.ipynb'})()
    config = {'site_dir': '/nonexistent'}
    ok = '<p><a href="https://course.fast.ai">a link</a></p><img src="data:image/png;base64,AAAA">'
    assert on_post_page(ok, Page(), config) == ok
    for bad in ('<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">',
                '<script src="//cdn.jsdelivr.net/npm/mathjax@3"></script>',
                '<img src="http://example.com/a.png">',
                '<style>@font-face { src: url(https://fonts.gstatic.com/x.woff2) }</style>',
                '<script type="module">const m = await import("https://cdnjs.com/x.mjs")</script>'):
        with pytest.raises(ValueError, match='from the internet'): on_post_page(bad, Page(), config)

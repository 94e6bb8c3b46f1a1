"""Open the built course site in headless Chromium, as a reader would, and report what is wrong with it.

The site is served from 127.0.0.1 and every page is loaded in turn. For each page: every formula typeset by
KaTeX (no error, no TeX left as text, as many typeset formulas as the page holds), every image loaded, no code
line, table or formula cut off or wider than the column, no font that failed; for the whole visit: no request
to another host (the browser cannot even resolve one) and none that failed; and the search box finds given
words. Screenshots go to a folder to look at.

    python tools/check_site.py [SITE_DIR] [--shots DIR] [--search DDIM Learner]

Needs Debian's `chromium` (tools/run.sh installs it) and `websockets` (for the Chrome DevTools protocol).
"""
import argparse, asyncio, base64, contextlib, functools, html.parser, http.server, json, os, re, shutil
import subprocess, sys, tempfile, threading, time, urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update', '--disable-sync',
                  '--disable-default-apps', '--disable-extensions', '--mute-audio', '--hide-scrollbars',
                  # nothing but 127.0.0.1 resolves: a request to another host fails at once (and is reported)
                  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1']
VIEWPORT = dict(width=1280, height=900)
# as tools/site/math.js tells KaTeX's auto-render: these are not searched for formulas
SKIP_TAGS = {'script', 'noscript', 'style', 'textarea', 'pre', 'code', 'option'}
SKIP_CLASSES = {'clipboard-copy-txt', 'md-search'}
DELIMITERS = [('$$', '$$'), ('\\[', '\\]'), ('$', '$'), ('\\(', '\\)')]
ERROR_COLOR = '#cc0033'  # KaTeX's errorColor in tools/site/math.js: unknown commands are drawn in it


def find_chromium() -> str:
    "The Chromium to drive: $CHROMIUM, else `chromium` on the PATH; a clear error if there is none."
    exe = os.environ.get('CHROMIUM') or shutil.which('chromium') or shutil.which('chromium-browser')
    if not exe:
        raise FileNotFoundError("no Chromium found: install Debian's `chromium` package (apt-get install "
                                "chromium; `bash tools/run.sh test` does it) or set CHROMIUM to the browser")
    return exe


# ------------------------------------------------------------------------------------------------- formulas
def _end_of_math(right: str, text: str, start: int) -> int:
    "Where the formula that starts before `start` ends (auto-render's rule: braces nest, `\\` escapes)."
    i, depth = start, 0
    while i < len(text):
        if depth <= 0 and text.startswith(right, i): return i
        if text[i] == '\\': i += 1
        elif text[i] == '{': depth += 1
        elif text[i] == '}': depth -= 1
        i += 1
    return -1


def formulas_in(text: str) -> list[str]:
    "The formulas KaTeX's auto-render finds in one run of text, in order."
    found, left_re = [], re.compile('|'.join(re.escape(l) for l, _ in DELIMITERS))
    while (m := left_re.search(text)):
        text = text[m.start():]
        left, right = next(d for d in DELIMITERS if text.startswith(d[0]))
        end = _end_of_math(right, text, len(left))
        if end == -1: break
        found.append(text[len(left):end])
        text = text[end + len(right):]
    return found


class _TextRuns(html.parser.HTMLParser):
    "The runs of text in a page that KaTeX searches for formulas (outside code, scripts and skipped classes)."
    VOID = {'area', 'base', 'br', 'col', 'embed', 'hr', 'img', 'input', 'link', 'meta', 'source', 'track',
            'wbr'}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.runs = [], []

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID: return
        classes = set((dict(attrs).get('class') or '').split())
        self.stack.append(tag in SKIP_TAGS or bool(classes & SKIP_CLASSES))

    def handle_endtag(self, tag):
        if tag not in self.VOID and self.stack: self.stack.pop()

    def handle_data(self, data):
        if not any(self.stack): self.runs.append(data)


def expected_formulas(page_html: str) -> list[str]:
    "Every formula in a page's HTML, as KaTeX's auto-render will find them."
    p = _TextRuns(); p.feed(page_html); p.close()
    return [f for run in p.runs for f in formulas_in(run)]


# -------------------------------------------------------------------------------------------------- serving
class _Handler(http.server.SimpleHTTPRequestHandler):
    log: list  # (path, status) of every request, set per server

    def log_request(self, code='-', size='-'):
        self.log.append((self.path, int(code) if str(code).isdigit() else 0))
    def log_message(self, *args): pass


@contextlib.contextmanager
def serve(site: Path):
    "Serve `site` on 127.0.0.1 (a free port) in a thread; yields (base url, request log)."
    log = []
    handler = functools.partial(type('Handler', (_Handler,), {'log': log}), directory=str(site))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try: yield f'http://127.0.0.1:{server.server_address[1]}/', log
    finally: server.shutdown(); server.server_close(); thread.join()


# -------------------------------------------------------------------------------------------------- browser
class Chromium:
    "Headless Chromium driven over the DevTools protocol (one websocket): `async with Chromium() as b:`."

    def __init__(self, exe: str | None = None): self.exe = exe or find_chromium()

    async def __aenter__(self):
        import websockets
        self.profile = tempfile.mkdtemp(prefix='miniai-chromium-')
        cmd = [self.exe, *CHROMIUM_FLAGS, f'--user-data-dir={self.profile}', '--remote-debugging-port=0',
               'about:blank']
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file, t0 = Path(self.profile)/'DevToolsActivePort', time.time()
        while not (port_file.exists() and len(port_file.read_text().split()) == 2):
            if self.proc.poll() is not None:
                raise RuntimeError(f'{self.exe} exited at start with code {self.proc.returncode}')
            if time.time() - t0 > 30: raise TimeoutError(f'{self.exe} opened no DevTools port within 30 s')
            await asyncio.sleep(0.05)
        port, path = port_file.read_text().split()
        self.ws = await websockets.connect(f'ws://127.0.0.1:{port}{path}', max_size=None)
        self.next_id, self.pending, self.events = 0, {}, []
        self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self):
        async for raw in self.ws:
            msg = json.loads(raw)
            if 'id' in msg and (fut := self.pending.pop(msg['id'], None)) and not fut.done():
                if 'error' in msg: fut.set_exception(RuntimeError(f"DevTools error: {msg['error']}"))
                else: fut.set_result(msg.get('result', {}))
            elif 'method' in msg: self.events.append(msg)

    async def send(self, method: str, params: dict | None = None, session: str | None = None,
                   timeout: float = 60):
        self.next_id += 1
        msg = {'id': self.next_id, 'method': method, 'params': params or {}}
        if session: msg['sessionId'] = session
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send(json.dumps(msg))
        return await asyncio.wait_for(fut, timeout)

    async def new_tab(self) -> 'Tab':
        target = (await self.send('Target.createTarget', {'url': 'about:blank'}))['targetId']
        attached = await self.send('Target.attachToTarget', {'targetId': target, 'flatten': True})
        session = attached['sessionId']
        tab = Tab(self, session)
        for m in ('Page.enable', 'Network.enable', 'Runtime.enable'): await tab.send(m)
        await tab.send('Emulation.setDeviceMetricsOverride', dict(VIEWPORT, deviceScaleFactor=1,
                                                                  mobile=False))
        return tab

    async def __aexit__(self, *exc):
        try:
            with contextlib.suppress(Exception): await asyncio.wait_for(self.send('Browser.close'), 5)
            with contextlib.suppress(Exception): await self.ws.close()
            self.reader.cancel()
        finally:
            try: self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()
            shutil.rmtree(self.profile, ignore_errors=True)


class Tab:
    def __init__(self, browser: Chromium, session: str): self.browser, self.session = browser, session

    async def send(self, method, params=None, timeout=60):
        return await self.browser.send(method, params, self.session, timeout)

    async def js(self, expr: str, timeout: float = 60):
        "The value of a JavaScript expression (awaited if it is a promise)."
        args = {'expression': expr, 'awaitPromise': True, 'returnByValue': True}
        r = await self.send('Runtime.evaluate', args, timeout)
        if 'exceptionDetails' in r: raise RuntimeError(f"JavaScript error: {r['exceptionDetails']}")
        return r['result'].get('value')

    async def goto(self, url: str, timeout: float = 60):
        await self.send('Page.navigate', {'url': url})
        t0 = time.time()
        while await self.js('document.readyState + " " + location.href') != f'complete {url}':
            if time.time() - t0 > timeout: raise TimeoutError(f'{url} did not load within {timeout} s')
            await asyncio.sleep(0.05)

    async def screenshot(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        shot = await self.send('Page.captureScreenshot', {'format': 'png'})
        path.write_bytes(base64.b64decode(shot['data']))


# what a page shows, measured once the formulas are typeset, the fonts ready and the images loaded or failed
PAGE_JS = r"""(async (ERROR_COLOR) => {
  const sleep = ms => new Promise(r => setTimeout(r, ms)), t0 = Date.now();
  while (document.documentElement.dataset.math !== 'done' && Date.now() - t0 < 20000) await sleep(25);
  await document.fonts.ready;
  await Promise.all([...document.images].map(i => i.complete ? null :
    new Promise(r => { i.addEventListener('load', r); i.addEventListener('error', r); })));
  const main = document.querySelector('article') || document.body, text = el => el.textContent.trim();
  const skip = 'script, noscript, style, textarea, pre, code, option, .clipboard-copy-txt, .md-search, '
             + '.katex';
  const leftover = [], walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n; (n = walk.nextNode());)
    if (!n.parentElement.closest(skip) && /\$|\\\(|\\\[/.test(n.textContent))
      leftover.push(text(n).slice(0, 120));
  // what does not fit its box: code that scrolls sideways, content cut off (overflow hidden), and anything
  // else that must be scrolled sideways to be read (a table, an output or a formula wider than the column)
  const cut = [], sideways = [], wide = el => el.scrollWidth > el.clientWidth + 1;
  for (const el of main.querySelectorAll('*')) {
    if (!el.offsetParent || !wide(el)) continue;
    if (el.closest('.katex-mathml')) continue;  // KaTeX's MathML copy is hidden on purpose
    const ox = getComputedStyle(el).overflowX;
    const name = `${el.tagName.toLowerCase()}.${[...el.classList].join('.')}`;
    const desc = `${name} (${el.scrollWidth}px in ${el.clientWidth}px): ` + text(el).slice(0, 80);
    if (el.tagName === 'PRE') cut.push('code scrolls sideways: ' + desc);
    else if (ox === 'hidden' || ox === 'clip') { if (!el.closest('.katex')) cut.push('cut off: ' + desc); }
    else if (ox === 'auto' || ox === 'scroll') sideways.push(desc);
  }
  if (wide(main)) cut.push(`the page is wider than its column (${main.scrollWidth}px in `
                           + `${main.clientWidth}px)`);
  const errors = [...document.querySelectorAll('.katex-error')]
    .map(e => (e.title || e.textContent).slice(0, 160));
  const unknown = [...document.querySelectorAll(`.katex-mathml [mathcolor="${ERROR_COLOR}"]`)].map(text);
  const src = i => (i.currentSrc || i.src).slice(0, 100);
  return {
    title: document.title, h1: (main.querySelector('h1') || {}).textContent || '',
    tex: [...main.querySelectorAll('.katex annotation[encoding="application/x-tex"]')].map(text),
    formulas: main.querySelectorAll('.katex').length,
    katex_errors: [...errors, ...unknown.map(u => 'unknown: ' + u)],
    math_processing_errors: (document.body.innerText.match(/Math Processing Error/g) || []).length,
    mathjax: typeof window.MathJax !== 'undefined',
    leftover_tex: leftover,
    images: document.images.length,
    broken_images: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(src),
    failed_fonts: [...document.fonts].filter(f => f.status === 'error').map(f => f.family),
    cut_off: cut, sideways,
  };
})"""

# open the search box as a reader does (click it, then type: see `_search`), then wait for the results
OPEN_SEARCH_JS = r"""(() => {
  const box = document.querySelector('input.md-search__input');
  if (!box) return false;
  document.querySelector('label[for="__search"]').click(); box.focus(); box.value = '';
  return document.activeElement === box;
})()"""
SEARCH_RESULTS_JS = r"""(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms)), t0 = Date.now();
  const items = () => [...document.querySelectorAll('.md-search-result__item a')];
  while (!items().length && Date.now() - t0 < 15000) await sleep(50);
  await sleep(300);
  return {meta: (document.querySelector('.md-search-result__meta') || {}).textContent || '',
          results: items().map(a => ({href: a.getAttribute('href'),
                                      text: a.innerText.replace(/\s+/g, ' ').slice(0, 160)}))};
})()"""
SCROLL_TO_MATHS_JS = """(() => { const m = document.querySelector('.katex-display'); if (!m) return false;
  m.scrollIntoView({block: 'center'}); return true; })()"""


async def _search(tab: Tab, q: str) -> dict:
    "Type `q` into the site's search box; the results it lists."
    if not await tab.js(OPEN_SEARCH_JS): return {'error': 'no search box on the page', 'results': []}
    await tab.send('Input.insertText', {'text': q})
    return await tab.js(SEARCH_RESULTS_JS)


def _pages(site: Path) -> list[str]:
    "Every page a reader reaches: the home page, then the pages in the navigation's order, then any other."
    home = (site/'index.html').read_text()
    pages = sorted(p.name for p in site.glob('*.html') if p.name not in ('404.html', 'index.html'))
    in_nav = [p for p in dict.fromkeys(re.findall(r'href="([\w.-]+\.html)"', home)) if p in pages]
    return ['index.html'] + in_nav + [p for p in pages if p not in in_nav]


def _requests(events: list, base: str) -> tuple[list, list]:
    "The requests to other hosts, and the ones that failed, from the browser's network events."
    external, failed = [], {}
    for ev in events:
        p = ev.get('params', {})
        if ev['method'] == 'Network.requestWillBeSent':
            url = p['request']['url']
            if not url.startswith((base, 'data:', 'blob:', 'about:')): external.append(url[:200])
        elif ev['method'] == 'Network.responseReceived' and p['response']['status'] >= 400:
            failed[p['requestId']] = f"{p['response']['status']} {p['response']['url'][:200]}"
        elif ev['method'] == 'Network.loadingFailed' and not p.get('canceled'):
            failed.setdefault(p['requestId'], f"{p.get('errorText')} (request {p['requestId']})")
    return external, sorted(set(failed.values()))


async def _visit(site: Path, shots: Path | None, search: tuple, shot_pages: tuple) -> dict:
    report = {'pages': {}, 'search': {}, 'shots': []}
    with serve(site) as (base, log):
        async with Chromium() as browser:
            tab = await browser.new_tab()
            for name in _pages(site):
                t0 = time.time()
                await tab.goto(base + name)
                stats = await tab.js(f'{PAGE_JS}({json.dumps(ERROR_COLOR)})')
                stats['expected'] = expected_formulas((site/name).read_text())
                stats['seconds'] = round(time.time() - t0, 2)
                report['pages'][name] = stats
                if shots and name in shot_pages:
                    await tab.screenshot(shots/name.replace('.html', '.png')); report['shots'].append(name)
                    if await tab.js(SCROLL_TO_MATHS_JS):
                        await asyncio.sleep(0.2)
                        await tab.screenshot(shots/name.replace('.html', '_maths.png'))
            for q in search:
                await tab.goto(base + 'index.html')
                report['search'][q] = await _search(tab, q)
                if shots and q == search[0]: await tab.screenshot(shots/'search.png')
        report['external_requests'], report['failed_requests'] = _requests(browser.events, base)
        report['server_errors'] = sorted({f'{s} {p}' for p, s in log if s >= 400})
    return report


def check_site(site: Path, shots: Path | None = None, search=('DDIM', 'Learner'),
               shot_pages=('index.html', 'ddpm.html')) -> dict:
    "Visit every page of the built `site` in headless Chromium; the measurements (see `problems`)."
    return asyncio.run(_visit(Path(site), Path(shots) if shots else None, tuple(search), tuple(shot_pages)))


def problems(report: dict, expect_search: dict | None = None) -> list[str]:
    "What a reader would find wrong, one line each; [] when the site is fine."
    out = []
    for name, s in report['pages'].items():
        def bad(what, items): out.append(f"{name}: {len(items)} {what}: {items[:3]}")
        if s['katex_errors']: bad('formulas KaTeX cannot typeset', s['katex_errors'])
        if n := s['math_processing_errors']: out.append(f"{name}: 'Math Processing Error' shown {n} times")
        if s['mathjax']: out.append(f"{name}: MathJax is loaded (the site typesets with KaTeX)")
        if s['leftover_tex']: bad('pieces of TeX left as text', s['leftover_tex'])
        if s['formulas'] != len(s['expected']):
            out.append(f"{name}: {s['formulas']} formulas typeset, the page holds {len(s['expected'])}")
        if s['broken_images']: bad(f"of {s['images']} images not loaded", s['broken_images'])
        if s['failed_fonts']: bad('fonts failed to load', sorted(set(s['failed_fonts'])))
        if s['cut_off']: bad('things cut off or scrolling sideways', s['cut_off'])
        if s['sideways']: bad('tables, outputs or formulas wider than the column', s['sideways'])
    out += [f"request to another host: {url}" for url in report['external_requests']]
    out += [f"failed request: {r}" for r in report['failed_requests']]
    out += [f"the server answered {r}" for r in report['server_errors']]
    for q, page in (expect_search or {}).items():
        found = report['search'].get(q, {}).get('results', [])
        hits = [urllib.parse.urlsplit(r['href']).path.rsplit('/', 1)[-1] for r in found]
        if page not in hits: out.append(f"searching {q!r} does not find {page}: {hits[:5]}")
    return out


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('site', nargs='?', default=str(ROOT/'_docs'), help='the built site (default: _docs/)')
    ap.add_argument('--shots', default=str(ROOT/'_docs_shots'),
                    help='where screenshots go (default: _docs_shots/)')
    ap.add_argument('--search', nargs='*', default=['DDIM', 'Learner'], help='words the search box must find')
    a = ap.parse_args()
    t0 = time.time()
    rep = check_site(Path(a.site), Path(a.shots), a.search)
    for name, s in rep['pages'].items():
        print(f"{name:26} {s['seconds']:5.2f} s {s['formulas']:4} formulas {s['images']:3} images  "
              f"{s['h1'][:50]}")
    for q, r in rep['search'].items():
        print(f"search {q!r}: {r.get('meta', '').strip()}: {[x['href'] for x in r.get('results', [])][:4]}")
    bad = problems(rep)
    print('\n'.join(bad) or f"no problems on {len(rep['pages'])} pages ({time.time() - t0:.0f} s); "
                            f"screenshots in {a.shots}")
    sys.exit(1 if bad else 0)

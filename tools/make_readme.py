"""Write README.md from nbs/index.ipynb (the home page of the docs), so the two never drift apart.

`nbdev_readme` does this with Quarto, which these machines cannot install. Usage: python tools/make_readme.py [--check]
"""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme() -> str:
    nb = json.loads((ROOT/'nbs'/'index.ipynb').read_text())
    parts = [''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown']
    text = '\n\n'.join(parts)
    text = re.sub(r'\]\((\d\d[a-z]?_\w+\.ipynb)\)', r'](nbs/\1)', text)  # notebook links work from the root
    return f"{text}\n\n<!-- generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file -->\n"


if __name__ == '__main__':
    new, path = readme(), ROOT/'README.md'
    if '--check' in sys.argv:
        if path.read_text() != new: sys.exit('README.md is out of step with nbs/index.ipynb: run python tools/make_readme.py')
    else: path.write_text(new); print(f'wrote {path}')

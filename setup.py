from configparser import ConfigParser
import setuptools

# Everything about the package is read from settings.ini (nbdev's single source of truth).
config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

licenses = {'apache2': 'Apache-2.0'}  # SPDX identifiers
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
py_versions = '3.10 3.11 3.12 3.13'.split()

requirements = cfg.get('requirements', '').split()
# Optional parts: `extras = mnist` with `mnist_requirements = ...` gives `pip install 'miniai[mnist]'`.
extras = {name: cfg[f'{name}_requirements'].split() for name in cfg.get('extras', '').split()}
# `dev` is everything needed to work on the course: its own tools and every extra (the tests use them all).
dev_requirements = cfg.get('dev_requirements', '').split()
dev_requirements += [r for reqs in extras.values() for r in reqs if r not in dev_requirements]
min_python = cfg['min_python']

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    license=licenses[cfg['license'].lower()],
    classifiers=['Development Status :: ' + statuses[int(cfg['status'])],
                 'Intended Audience :: ' + cfg['audience'].title(),
                 'Natural Language :: ' + cfg['language'].title()] +
                ['Programming Language :: Python :: ' + o for o in py_versions[py_versions.index(min_python):]],
    url=cfg['git_url'],
    packages=setuptools.find_packages(include=['miniai', 'miniai.*']),
    include_package_data=True,
    install_requires=requirements,
    extras_require={**extras, 'dev': dev_requirements},
    python_requires='>=' + min_python,
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    zip_safe=False,
    entry_points={'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
    author=cfg['author'], author_email=cfg['author_email'],
    description=cfg['description'], keywords=cfg['keywords'],
)

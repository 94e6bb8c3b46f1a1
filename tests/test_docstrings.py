"Every public function and class of the package has a docstring of its own: it opens its API entry."
import importlib, inspect, pkgutil

import miniai


def _public():
    for m in pkgutil.iter_modules(miniai.__path__):
        if m.name.startswith('_'): continue
        mod = importlib.import_module(f'miniai.{m.name}')
        for name in getattr(mod, '__all__', []): yield f'miniai.{m.name}.{name}', getattr(mod, name)


def _own_doc(obj) -> str:
    "The docstring `obj` itself has (a class's own, not an inherited one; nothing from a callable's type)."
    if inspect.isclass(obj): doc = obj.__dict__.get('__doc__')
    elif inspect.isroutine(obj): doc = obj.__doc__
    else: doc = obj.__doc__ if obj.__doc__ is not type(obj).__doc__ else None
    return (doc or '').strip()


def test_every_public_function_and_class_has_its_own_docstring():
    callables = [(n, o) for n, o in _public() if callable(o)]
    assert len(callables) > 100  # the check sees the package
    missing = sorted(n for n, o in callables if not _own_doc(o))
    assert not missing, f"no docstring of their own (the site would show none): {missing}"


def test_the_check_sees_a_missing_docstring():
    class NoDoc(Exception): pass
    def f(): pass
    from miniai.learner import Learner
    assert _own_doc(NoDoc) == '' and _own_doc(f) == '' and _own_doc(Learner).startswith('Train')

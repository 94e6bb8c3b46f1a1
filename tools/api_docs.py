"""The API entries of the course site, written from the objects themselves.

nbdev's `show_doc` puts the docments inside a code block, where markdown links stay raw, prints `NoneType`
for a parameter whose default is None, and shows a class without its own `__init__` as `(*args, **kwargs)`.
Here an entry is: the heading, a link to the source, the signature as Python (only the annotations the author
wrote), the object's own docstring, and a table of the parameters with their docments (markdown, so backticked
names become links).
"""
import importlib, inspect, re
from functools import partial

from fastcore.docments import docments
from nbdev.doclinks import NbdevLookup

WIDTH = 88  # a signature longer than this gets one parameter per line


def find_symbol(name: str, modules: list):
    "The object called `name` (`Learner`, `Learner.fit`) in the first of `modules` that has it, or None."
    head, *rest = name.split('.')
    for m in modules:
        mod = importlib.import_module(m)
        if hasattr(mod, head):
            obj = getattr(mod, head)
            for part in rest: obj = getattr(obj, part)
            return obj
    return None


def own_doc(obj) -> str:
    "The docstring `obj` itself has: not one inherited from a base class, nor `Call self as a function.`."
    if inspect.isclass(obj): doc = obj.__dict__.get('__doc__')
    elif isinstance(obj, property): doc = obj.fget.__doc__ if obj.fget else None
    elif inspect.isroutine(obj) or isinstance(obj, partial): doc = getattr(obj, '__doc__', None)
    else: doc = None
    if isinstance(obj, partial) and doc == partial.__doc__: doc = None
    return inspect.cleandoc(doc) if isinstance(doc, str) and doc.strip() else ''


def type_name(a) -> str:
    "An annotation as the author would write it: `None`, `Tensor`, `int | None`, `tuple[int, int]`."
    if a is inspect.Parameter.empty: return ''
    if a is None or a is type(None): return 'None'
    if isinstance(a, str): return a
    if isinstance(a, type) and not getattr(a, '__args__', None): return a.__qualname__
    s = inspect.formatannotation(a)
    s = re.sub(r'\b(?:typing|collections\.abc|torch\.nn\.modules\.\w+|torch|pathlib|numpy)\.', '', s)
    return s.replace('NoneType', 'None')


def default_text(d) -> str:
    "A default value as code: functions and classes by name, long reprs shortened."
    if d is inspect.Parameter.empty: return ''
    if isinstance(d, partial): return f"partial({default_text(d.func)}, ...)"
    if inspect.isroutine(d) or inspect.isclass(d):
        return getattr(d, '__qualname__', getattr(d, '__name__', repr(d)))
    r = repr(d)
    return r if len(r) <= 40 else r[:37] + '...'


def _init_of(cls):
    "The `__init__` a user of `cls` calls if the course wrote it (its own or a miniai base's), else None."
    for c in cls.__mro__:
        if '__init__' in c.__dict__:
            return c.__dict__['__init__'] if (c.__module__ or '').startswith('miniai') else None
    return None


def _params(fn, drop_self: bool) -> tuple[list, str]:
    "The parameters of `fn` as source text (with `/` and `*` where Python needs them), and its return type."
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    if drop_self and params and params[0].name in ('self', 'cls'): params = params[1:]
    out, kw_marked = [], any(q.kind == q.VAR_POSITIONAL for q in params)  # `*args` starts keyword-only
    for i, p in enumerate(params):
        if p.kind == p.KEYWORD_ONLY and not kw_marked: out.append('*'); kw_marked = True
        pre = {p.VAR_POSITIONAL: '*', p.VAR_KEYWORD: '**'}.get(p.kind, '')
        s = pre + p.name + (f':{type_name(p.annotation)}' if p.annotation is not p.empty else '')
        if p.default is not p.empty: s += f'={default_text(p.default)}'
        out.append(s)
        if p.kind == p.POSITIONAL_ONLY and (i + 1 == len(params) or params[i+1].kind != p.POSITIONAL_ONLY):
            out.append('/')
    ret = type_name(sig.return_annotation)
    return out, ret


def _call(prefix: str, name: str, params: list, ret: str, indent: str = '') -> str:
    "`prefix name(params) -> ret`, one parameter per line when it does not fit."
    tail = f" -> {ret}" if ret else ''
    one = f"{indent}{prefix}{name}({', '.join(params)}){tail}"
    if len(one) <= WIDTH or not params: return one
    inner = ''.join(f"\n{indent}    {p}," for p in params)
    return f"{indent}{prefix}{name}({inner}\n{indent}){tail}"


def signature_text(obj, name: str) -> str:
    "The signature of `obj` as Python a learner can read."
    short = name.split('.')[-1]
    if inspect.isclass(obj):
        bases = [('nn.' if b.__module__.startswith('torch.nn') else '') + b.__qualname__
                 for b in obj.__bases__ if b is not object]
        head = f"class {short}({', '.join(bases)})" if bases else f"class {short}"
        init = _init_of(obj)
        if init is None: return head
        params, _ = _params(init, drop_self=True)
        return head + ':\n' + _call('def ', '__init__', ['self'] + params, '', indent='    ')
    if isinstance(obj, property): obj = obj.fget
    try: params, ret = _params(obj, drop_self='.' in name)
    except (TypeError, ValueError): return f"{short}"
    if '.' in name: params = ['self'] + params
    prefix = 'async def ' if inspect.iscoroutinefunction(obj) else 'def '
    return _call(prefix, short, params, ret)


def _cell(s: str) -> str: return ' '.join(str(s).split()).replace('|', '\\|')


def param_table(obj) -> str:
    "A markdown table of the parameters that have a docment (and of the return value if it has one), or ''."
    fn = _init_of(obj) if inspect.isclass(obj) else (obj.fget if isinstance(obj, property) else obj)
    if fn is None: return ''
    try: docs, sig = docments(fn), inspect.signature(fn)
    except (TypeError, ValueError, OSError): return ''
    rows = []
    for p in sig.parameters.values():
        if p.name in ('self', 'cls') or not docs.get(p.name): continue
        pre = {p.VAR_POSITIONAL: '\\*', p.VAR_KEYWORD: '\\*\\*'}.get(p.kind, '')
        typ = f"`{type_name(p.annotation)}`" if p.annotation is not p.empty else ''
        dflt = f"`{default_text(p.default)}`" if p.default is not p.empty else ''
        rows.append(f"| `{pre}{p.name}` | {typ} | {dflt} | {_cell(docs[p.name])} |")
    if docs.get('return') and not inspect.isclass(obj):
        ret = type_name(sig.return_annotation)
        rows.append(f"| **returns** | {f'`{ret}`' if ret else ''} | | {_cell(docs['return'])} |")
    if not rows: return ''
    return '| Parameter | Type | Default | Details |\n|---|---|---|---|\n' + '\n'.join(rows)


def source_url(obj) -> str | None:
    "The link to where `obj` is defined in the repository (nbdev's settings), at its line."
    res = NbdevLookup()[f"{obj.__module__}.{obj.__qualname__}"]
    if not isinstance(res, tuple): return None
    try: return f"{res[2]}#L{inspect.getsourcelines(inspect.unwrap(obj))[1]}"
    except (OSError, TypeError): return res[2]


def api_entry(obj, name: str, level: int = 3) -> str:
    "The markdown of one API entry."
    parts = ['---']
    if src := source_url(obj): parts.append(f'<a class="api-source" href="{src}">source</a>')
    parts += [f"{'#' * level} {name}", f"```python\n{signature_text(obj, name)}\n```"]
    if doc := own_doc(obj): parts.append(doc)
    if tbl := param_table(obj): parts.append(tbl)
    md = '\n\n'.join(parts)
    return NbdevLookup().linkify(md)

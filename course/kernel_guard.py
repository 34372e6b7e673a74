"""Runs inside a student's kernel while it is graded: undo tampering with the instructor's code.

Grading puts ``__grading_guard__.before()`` in front of every cell the student cannot edit (set-up and
test cells) and ``__grading_guard__.after()`` behind it. ``after`` remembers the helpers (functions,
classes, modules) the instructor's cell bound in the notebook and the contents of the modules that tests
rely on (``torch``, ``numpy``, ``math``, ``builtins``, ``labkit`` ...). ``before`` puts back whatever the
student's cells changed since -- a redefined ``assert_close``, a monkeypatched ``torch.allclose``, an
``__eq__`` bolted onto ``torch.Tensor`` -- and returns the names it restored, which grading reports.

This raises the bar; it is not a sandbox (that is bubblewrap's job): code that rewrites the interpreter
itself can still get past it. This file is executed as the source of a cell, so it imports nothing of
the course and defines one name, ``__grading_guard__``.
"""


def _make_guard(namespace):
    import sys
    import types

    watched_modules = ("builtins", "math", "operator", "numpy", "numpy.testing", "torch", "torch.testing",
                       "torch.nn", "torch.nn.functional", "torch.nn.utils", "torch.nn.utils.clip_grad",
                       "torch.linalg", "torch.autograd", "torch.func")
    watched_classes = (("torch", "Tensor"), ("torch.nn", "Module"))
    helper_types = (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType)
    kernel_managed = {"builtins.input", "builtins.raw_input"}  # ipykernel rebinds these for every cell
    missing = object()

    class Guard:
        """Snapshots of the instructor's helpers and of the watched modules; see the module docstring."""

        def __init__(self):
            self.helpers = {}  # name in the notebook -> the object an instructor's cell bound to it
            self.saved = {}  # label -> (module or class, a copy of its __dict__)
            self.seen = dict(namespace)
            self._snapshot()

        def _snapshot(self):
            for name in watched_modules:
                if name in sys.modules and name not in self.saved:
                    self.saved[name] = (sys.modules[name], dict(vars(sys.modules[name])))
            for name in [n for n in sys.modules if n == "labkit" or n.startswith("labkit.")]:
                if name not in self.saved:
                    self.saved[name] = (sys.modules[name], dict(vars(sys.modules[name])))
            for module, attr in watched_classes:
                label = f"{module}.{attr}"
                cls = getattr(sys.modules.get(module), attr, None)
                if isinstance(cls, type) and label not in self.saved:
                    self.saved[label] = (cls, dict(vars(cls)))

        def before(self):
            """Restore what the student changed; return the restored names (``None`` when nothing was)."""
            restored = []
            for label, (owner, snapshot) in self.saved.items():
                current = vars(owner)
                is_class = isinstance(owner, type)
                for key, value in snapshot.items():
                    private = key.startswith("_") and not is_class  # modules keep private state there
                    if not private and current.get(key, missing) is not value and f"{label}.{key}" not in kernel_managed:
                        setattr(owner, key, value)
                        restored.append(f"{label}.{key}")
                if is_class:  # a dunder the student added, e.g. Tensor.__eq__
                    for key in [k for k in current if k not in snapshot and k.startswith("__")]:
                        delattr(owner, key)
                        restored.append(f"{label}.{key}")
            for name, value in self.helpers.items():
                if namespace.get(name, missing) is not value:
                    namespace[name] = value
                    restored.append(name)
            self.seen = dict(namespace)
            return sorted(restored) or None

        def after(self):
            """Remember the helpers the instructor's cell just bound and the modules it imported."""
            for name, value in namespace.items():
                if name.startswith("_") or name in ("In", "Out", "get_ipython", "exit", "quit"):
                    continue
                if isinstance(value, helper_types) and self.seen.get(name, missing) is not value:
                    self.helpers[name] = value
            self._snapshot()

    return Guard()


__grading_guard__ = _make_guard(globals())
del _make_guard

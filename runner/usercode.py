"""Your own nn.Module (`model.kind: module`): imported from its code, built, checked.

The code's folder (in the task `code/`, beside a run's model.pt `code/` too) is the root Python
imports from: `class: Net` names a class of the one file `model.source` names; `module:Net`,
`package.module:Net` or `package.module.Net` one inside a folder.  The constructor gets
`model.args`, and, for the names it asks for that the job does not give, what qtrain knows of the
data (DATA_ARGS).  Every failure is one line naming the file and line, the field and the fix.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import traceback
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jobs.errors import JobError
from jobs.suggest import suggestion
from runner import outputs

# constructor parameters qtrain fills in from the data when the job's model.args does not
DATA_ARGS = {
    "in_features": "the input's width (a table's features; an image's channels x height x width)",
    "input_size": "the same as in_features",
    "input_shape": "the input's shape without the batch: [features] or [channels, height, width]",
    "in_channels": "an image's channels (1 for a table)",
    "num_classes": "the classes (classification)", "n_classes": "the same as num_classes",
    "out_features": "the outputs: the classes, or 1 for regression",
    "n_outputs": "the same as out_features", "output_size": "the same as out_features",
}


def data_args(input_shape: tuple[int, ...], n_outputs: int, classification: bool) -> dict[str, Any]:
    flat = int(torch.tensor(input_shape).prod())
    known: dict[str, Any] = {"in_features": flat, "input_size": flat, "input_shape": list(input_shape),
                             "in_channels": input_shape[0] if len(input_shape) == 3 else 1,
                             "out_features": n_outputs, "n_outputs": n_outputs, "output_size": n_outputs}
    if classification:
        known.update(num_classes=n_outputs, n_classes=n_outputs)
    return known


def split_ref(ref: str, single_file: str | None) -> tuple[str, str]:
    """(module, class) of `class`: `Net` is in the file `single_file` (model.source a .py);
    `a.b:Net` and `a.b.Net` are module a.b's class Net."""
    if ":" in ref:
        module, _, cls = ref.partition(":")
        return module, cls
    if "." in ref:
        module, _, cls = ref.rpartition(".")
        return module, cls
    if single_file is None:
        raise JobError(f"model.class {ref}: model.source is a folder, so name the module too",
                       hint=f"e.g. class: module:{ref} (module.py in the folder)")
    return Path(single_file).stem, ref


def load_class(root: Path, module: str, cls: str, source: str) -> type[nn.Module]:
    """Import `module` from the code folder `root` and return its class `cls`."""
    root = root.resolve()
    top = module.split(".")[0]
    stale = sys.modules.get(top)
    if stale is not None and not str(getattr(stale, "__file__", "") or "").startswith(str(root)):
        for name in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
            del sys.modules[name]  # another module of that name (a sweep trial's, another run's)
    sys.path.insert(0, str(root))
    try:
        mod = importlib.import_module(module)
    except SyntaxError as exc:
        line = (exc.text or "").strip()
        raise JobError(f"model.source {_shown(exc.filename, root, source)}:{exc.lineno}: syntax error: {exc.msg}"
                       + (f": {line}" if line else ""), hint="fix the code, then qtrain check again") from None
    except ModuleNotFoundError as exc:
        where = _user_frame(exc, root, source)
        if exc.name and (exc.name == module or module.startswith(exc.name + ".")):
            raise JobError(f"model.class {module}:{cls}: there is no module {module} in model.source {source}",
                           hint="check the file and folder names (in a folder: class: module:Class)") from None
        raise JobError(f"model.source {where}: imports {exc.name}, which is not installed in the runner's "
                       f"environment", hint="add it to resources.requirements") from None
    except Exception as exc:  # noqa: BLE001 - the user's code failed as it was imported
        raise JobError(f"model.source {_user_frame(exc, root, source)}: {type(exc).__name__} while importing: "
                       f"{str(exc)[:200]}", hint="fix the code, then qtrain check again") from None
    finally:
        try:
            sys.path.remove(str(root))
        except ValueError:
            pass
    found = getattr(mod, cls, None)
    if found is None:
        classes = [n for n, v in vars(mod).items() if isinstance(v, type)]
        raise JobError(f"model.class {cls}: {module} has no class {cls}{suggestion(cls, classes)}",
                       hint=f"its classes: {', '.join(sorted(classes)[:8]) or 'none'}")
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise JobError(f"model.class {cls}: {module}.{cls} is not a torch.nn.Module class",
                       hint="name the class of your network (class Net(nn.Module): ...)")
    return found


def build_module(cls: type[nn.Module], args: dict[str, Any], known: dict[str, Any], source: str) -> nn.Module:
    """`cls(**args)`, with the data's values for the parameters it asks for that `args` lacks."""
    params = inspect.signature(cls).parameters
    kwargs = dict(args)
    for name in params:
        if name not in kwargs and name in known:
            kwargs[name] = known[name]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in kwargs if k not in params and not takes_any]
    if unknown:
        raise JobError(f"model.args.{unknown[0]}: {cls.__name__}() takes no argument {unknown[0]}",
                       hint=f"its arguments: {', '.join(params) or 'none'}"
                            f"{suggestion(unknown[0], list(params), close=False)}")
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in kwargs]
    if missing:
        raise JobError(f"model.args.{missing[0]}: {cls.__name__}() needs {missing[0]}, which the job does not "
                       f"give and qtrain cannot know", hint=f"set model.args.{missing[0]} (qtrain fills in "
                                                            f"{', '.join(sorted(DATA_ARGS))})")
    try:
        model = cls(**kwargs)
    except Exception as exc:  # noqa: BLE001 - the constructor failed
        raise JobError(f"model.class {cls.__name__}: {_user_frame(exc, None, source)}: {type(exc).__name__} in its "
                       f"constructor: {str(exc)[:200]}", hint="check model.args against the class") from None
    return outputs.attach(model)  # its forward's tuple, dict or ModelOutput: the output tensor


def check_output(model: nn.Module, out: torch.Tensor, batch: int, n_outputs: int, classification: bool) -> None:
    """The forward pass gives (batch, n_outputs), or says what it gave."""
    if not isinstance(out, torch.Tensor):
        raise JobError(f"model.class {type(model).__name__}: forward returns {type(out).__name__}, not a tensor",
                       hint=f"qtrain takes {outputs.ACCEPTED}")
    wanted = (batch, n_outputs)
    if tuple(out.shape) != wanted and not (n_outputs == 1 and tuple(out.shape) == (batch,)):
        what = f"{n_outputs} classes" if classification else f"{n_outputs} output(s)"
        raise JobError(f"model.class {type(model).__name__} returns {tuple(out.shape)} for {what}: it must return "
                       f"({batch}, {n_outputs}) for a batch of {batch}",
                       hint="its last layer's out_features (qtrain passes out_features / num_classes when asked)")


def _shown(filename: str | None, root: Path, source: str) -> str:
    """A file of the code as its user knows it: below model.source (a folder), or model.source."""
    if not filename:
        return source
    try:
        rel = Path(filename).resolve().relative_to(root.resolve())
    except ValueError:
        return filename
    return source if source.endswith(".py") else str(Path(source) / rel)


def _user_frame(exc: BaseException, root: Path | None, source: str) -> str:
    """file:line of the innermost frame of the user's code (below `root`, when given) in `exc`'s
    traceback, with its line."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = str(Path(__file__).resolve().parent)
    inside = str(root.resolve()) if root is not None else None
    user = [f for f in frames if not f.filename.startswith(mine) and "importlib" not in f.filename
            and (inside is None or str(Path(f.filename).resolve()).startswith(inside))]
    if not user:
        return source
    frame = user[-1]
    where = _shown(frame.filename, root, source) if root is not None else Path(frame.filename).name
    return f"{where}:{frame.lineno}" + (f" ({frame.line.strip()})" if frame.line else "")

"""Errors that name a bad input and what to do about it.

The CLI turns every :class:`InputError` into one line on stderr and exit code 2.
:func:`model_errors` turns an error that a model's own forward raises on its input into one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


class InputError(ValueError):
    """A user-supplied input (file, name, option) cannot be used.

    The message is one line: what was wrong, and what to do instead.
    """


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
# camanim's own frames that hand a model's call on inside its forward: the recording wrapper, and
# the copy-on-write mode that runs every op of a model that writes in place
_INSIDE_FORWARD = {(os.path.join(_PACKAGE, "trace", "run.py"), "forward_or_record"),
                   (os.path.join(_PACKAGE, "trace", "run.py"), "call"),
                   (os.path.join(_PACKAGE, "trace", "inplace.py"), "__torch_function__"),
                   (os.path.join(_PACKAGE, "trace", "layouts.py"), "__torch_function__")}


def raised_by_model(exc: BaseException) -> bool:
    """Whether ``exc`` came out of a model's own forward, not out of camanim's code.

    True when its traceback enters a module call (``torch.nn.Module.__call__``) and the frame that
    raised it is outside camanim, or is camanim's recording wrapper handing a call on. A bug in
    camanim itself (a frame of camanim's own raised it) is False, so it keeps its traceback.
    """
    tb = exc.__traceback__
    entered = False
    last = ("", "")
    while tb is not None:
        code = tb.tb_frame.f_code
        filename = os.path.abspath(code.co_filename)
        if code.co_name in ("_call_impl", "_wrapped_call_impl") and "torch" in filename:
            entered = True
        last = (filename, code.co_name)
        tb = tb.tb_next
    return entered and (not last[0].startswith(_PACKAGE) or last in _INSIDE_FORWARD)


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


@contextmanager
def model_errors(model: str, shape: tuple[int, ...] | list[int], hint: str = "") -> Iterator[None]:
    """Turn an error the model's own forward raises on its input into one :class:`InputError` line.

    The line names the model, the input shape it was given and the model's own message, and
    ``hint`` (what to do). camanim's own errors (:class:`InputError`) and bugs keep their traceback.

    Args:
        model: the model's name, as the user gave it.
        shape: the input's shape, e.g. (1, 3, 224, 224).
        hint: what the user can change, e.g. ``"give its input size with --input-size H,W"``.

    Raises:
        InputError: the model's forward raised on the input.
    """
    try:
        yield
    except InputError:
        raise
    except Exception as exc:
        if not raised_by_model(exc):
            raise
        size = "x".join(str(int(s)) for s in shape)
        raise InputError(f"model '{model}' failed on the input {size} ({type(exc).__name__}: {_first_line(exc)})"
                         + (f": {hint}" if hint else "")) from exc

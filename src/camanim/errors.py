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


def torchscript_refusal(what: str) -> InputError:
    """The one-line refusal of a TorchScript model (``torch.jit.script``/``trace``/``freeze``, or a file
    ``torch.jit.save`` wrote): its forward runs no Python, so no layer of it can be recorded.

    Args:
        what: how the user gave the model, e.g. ``"model 'net.pt'"`` or ``"the model"``.
    """
    return InputError(f"{what} is TorchScript (torch.jit.script, trace or freeze), which runs no Python forward "
                      "whose layers camanim can record: pass the nn.Module it was made from, in Python, or its "
                      "state dict (torch.save(model.state_dict(), PATH); CLI: --model ARCH --weights PATH)")


#: what autograd says when a forward is written so that it cannot differentiate it
_NOT_DIFFERENTIABLE = ("automatic differentiation", "leaf Variable that requires grad",
                       "modified by an inplace operation", "does not require grad and does not have a grad_fn")


def not_differentiable(model: str, exc: BaseException) -> InputError | None:
    """A one-line refusal when ``exc`` is autograd saying that ``model``'s forward cannot be differentiated.

    Such a forward (an ``out=`` into a tensor that needs a gradient, an in-place write over a value
    its backward needs) runs under ``torch.no_grad`` but not while camanim records the gradient of
    the score; gradient-free methods still work. None when ``exc`` is anything else.

    Args:
        model: the model's name, as the user gave it.
        exc: the error the forward or the backward raised.
    """
    text = _first_line(exc)
    if not isinstance(exc, RuntimeError) or not any(k in text for k in _NOT_DIFFERENTIABLE):
        return None
    return InputError(f"model '{model}' cannot be differentiated by autograd as its forward is written ({text}): "
                      "gradient methods need the gradient of the score, so make that operation out of place, or "
                      "use a gradient-free method (--method scorecam, see 'camanim methods')")


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
        refusal = not_differentiable(model, exc)  # (the backward, too: autograd's words, not camanim's frames)
        if refusal is not None:
            raise refusal from exc
        if not raised_by_model(exc):
            raise
        size = "x".join(str(int(s)) for s in shape)
        raise InputError(f"model '{model}' failed on the input {size} ({type(exc).__name__}: {_first_line(exc)})"
                         + (f": {hint}" if hint else "")) from exc

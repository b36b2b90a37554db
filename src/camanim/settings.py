"""The one rule for options objects: a verb takes either ``options=`` or the same settings as keywords.

:class:`~camanim.compute.CamOptions`, :class:`~camanim.road.RoadOptions` and
:class:`~camanim.rundir.SaveOptions` are frozen dataclasses whose field names are the keywords of
:func:`camanim.animate`, :func:`camanim.ybroad` and ``CamResult.save``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def options_or_keywords(options: T | None, cls: type[T], keywords: Mapping[str, Any]) -> T:
    """``options`` when given, else ``cls(**keywords)``; never a silent mix of the two.

    Args:
        options: an instance of ``cls``, or None.
        cls: the options dataclass; its fields are the keyword names.
        keywords: the verb's keyword values (a value of None or equal to the field's default counts
            as not given).

    Raises:
        TypeError: ``options`` is not a ``cls``, or a keyword is set to something else than its
            default as well as ``options`` (the keyword would otherwise be ignored).
        InputError: a setting out of range (raised by ``cls``).
    """
    if options is None:
        return cls(**{k: v for k, v in keywords.items() if v is not None})
    if not isinstance(options, cls):
        raise TypeError(f"options must be a {cls.__name__}, not {type(options).__name__}")
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    given = sorted(k for k, v in keywords.items() if v is not None and not _same(v, defaults.get(k)))
    if given:
        raise TypeError(f"pass the settings either as options= or as keywords, not both: {', '.join(given)} "
                        f"set beside options= (put them in the {cls.__name__})")
    return options


def _same(value: Any, default: Any) -> bool:
    if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
        return tuple(value) == tuple(default)
    if isinstance(value, Mapping) and isinstance(default, Mapping):
        return dict(value) == dict(default)
    try:
        return bool(value == default)
    except (TypeError, ValueError, RuntimeError):  # tensors and other values without a plain ==
        return False

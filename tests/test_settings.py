"""The rule shared by the options objects: ``options=`` or keywords, never a silent mix."""

from __future__ import annotations

import dataclasses

import pytest

from camanim.settings import options_or_keywords


@dataclasses.dataclass(frozen=True)
class Opts:
    size: int = 3
    names: tuple[str, ...] = ("a",)
    limit: int | None = None


def test_keywords_build_the_options_and_none_means_the_default():
    assert options_or_keywords(None, Opts, {"size": 5, "names": ["b"], "limit": None}) == Opts(5, ["b"], None)
    assert options_or_keywords(None, Opts, {"size": None}) == Opts()


def test_options_win_only_when_every_keyword_is_at_its_default():
    given = Opts(size=9)
    assert options_or_keywords(given, Opts, {"size": 3, "names": ["a"], "limit": None}) is given
    with pytest.raises(TypeError, match="not both: limit, size"):
        options_or_keywords(given, Opts, {"size": 4, "limit": 1})
    with pytest.raises(TypeError, match="options must be a Opts, not dict"):
        options_or_keywords({"size": 4}, Opts, {})

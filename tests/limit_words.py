"""The end of a limit's refusal, which says when to try again (`bridge.limits.try_again`), for
the tests that run the service on the real clock and so cannot know the minute it names; the
tests on a fake clock (tests/test_limit_times.py) check the minute itself."""

from __future__ import annotations

import re

# In the tests' time zone (tests/settings.py: Europe/Istanbul, "+03").
WHEN = (r" after (\d{4}-\d\d-\d\d )?\d\d:\d\d \+03 "
        r"\(in (\d+ hours?|\d+ minutes?|\d+ hours? \d+ minutes?)\)")


def says_when(reply: tuple[int, str] | None, code: int, words: str, *,
              then: str = "please try again") -> bool:
    """Whether `reply` is `code` and `words`, then "; please try again after <when>" (or
    `then`: "please send it again")."""
    return reply is not None and reply[0] == code and re.fullmatch(
        re.escape(f"{words}; {then}") + WHEN, reply[1]) is not None

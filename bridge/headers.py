"""How the mail's headers are parsed: `policy.default`, with each header parsed once.

Kept apart from `bridge.mime`, which reads a mail's structure and content with it.
"""

from __future__ import annotations

from email import headerregistry, policy


class Registry(headerregistry.HeaderRegistry):
    """`policy.default`'s header parsing, done once per header.

    The stdlib's registry builds a new class for every header it parses (about 20 µs, a
    fifth of reading a small mail's headers). The class depends only on the kind of header
    (the registry's entry for the name, or the default), so one is kept per kind: a bounded
    handful, however many distinct header names mail brings.

    And `policy.default` parses a header anew on every access: reading one part asks for its
    `Content-Type` three or four times (the parser itself, its type, its boundary, its
    charset), at 10–30 µs each, and the same part headers (`text/plain; charset="utf-8"`,
    `base64`) come in mail after mail. Parsed headers are immutable, so the last `MEMO_SIZE`
    of them are kept by name and value; headers longer than `MEMO_VALUE_MAX` are parsed each
    time, which bounds what the memo holds."""

    MEMO_SIZE = 512
    MEMO_VALUE_MAX = 1024

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[type, type[headerregistry.BaseHeader]] = {}
        self._parsed: dict[tuple[str, str], headerregistry.BaseHeader] = {}

    def __getitem__(self, name: str) -> type[headerregistry.BaseHeader]:
        kind = self.registry.get(name.lower(), self.default_class)
        found = self._classes.get(kind)
        if found is None:
            found = self._classes[kind] = super().__getitem__(name)
        return found

    def __call__(self, name: str, value: str) -> headerregistry.BaseHeader:
        key = (name, value)
        found = self._parsed.get(key)
        if found is None:
            found = super().__call__(name, value)
            if len(value) <= self.MEMO_VALUE_MAX:
                if len(self._parsed) >= self.MEMO_SIZE:  # the oldest goes
                    del self._parsed[next(iter(self._parsed))]
                self._parsed[key] = found
        return found


POLICY = policy.default.clone(header_factory=Registry())

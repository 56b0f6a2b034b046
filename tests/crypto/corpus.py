"""Stored values that are not envelopes, and a check that a text shows no byte of one.

Some pass every check short of the key lookup: 37 bytes or more, the first 0x01 or
0x02 (a binary or hand-made plaintext). Bytes 1-8 of those are where an envelope's
key id would be; issue 27 (item 6) found them printed as a "key id".
"""

from __future__ import annotations

# (name, value): what a credential column could hold instead of an envelope.
NOT_ENVELOPES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("a short plaintext", b"hunter2-zq"),
    ("a JSON plaintext", b'{"password": "plain-zq81-secret", "host": "db.internal"}'),
    ("0x01 and 35 bytes (36)", b"\x01" + b"sk-live-QWERTY-0123456789abcdefghij"),
    ("0x03 and 40 bytes", b"\x03" + b"sk-live-QWERTY-0123456789abcdefghijklmno"),
    # Past the length and version checks: they reach the key lookup.
    ("0x01 and 36 bytes (37)", b"\x01" + b"sk-live-QWERTY-0123456789abcdefghijk"),
    ("0x02 and a JSON plaintext", b'\x02{"token": "xoxb-7788-SECRET-zq", "url": "hooks.example"}'),
    ("0x01 and binary bytes", b"\x01\x9c\x4e\xd2\x17\xa0\x3b\x66\xf1" + bytes(range(7, 60))),
]

# Of those, the ones that pass for an envelope until the key lookup.
PASS_THE_HEADER = [(n, v) for n, v in NOT_ENVELOPES if len(v) >= 37 and v[:1] in (b"\x01", b"\x02")]


def shown_bytes(text: str, value: bytes) -> list[str]:
    """Fragments of ``value`` that ``text`` shows: any 4 bytes in a row in hex (either
    case), any 6 in a row as text, and bytes 1-8 (where a key id would be) in hex."""
    lowered = text.lower()
    found = [value[i : i + 4].hex() for i in range(len(value) - 3)]
    found = [h for h in found if h in lowered]
    for i in range(len(value) - 5):
        shown = value[i : i + 6].decode("latin-1")
        if shown.isprintable() and shown in text:
            found.append(shown)
    if len(value) >= 9 and value[1:9].hex() in lowered:
        found.append(value[1:9].hex())
    return found

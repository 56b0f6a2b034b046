"""The migration lock, shared with golang-migrate: its keys (``keys.py``) and waiting
for them (``waiting.py``: try, LISTEN for the holder's NOTIFY, poll as a fallback)."""

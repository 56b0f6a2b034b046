"""Drift (issues 22 and 29): the live schema against what the files build at its version,
by what is tried: the hand changes operators make, what is excused, service sets, and
how a run goes (its scratch database, its errors)."""

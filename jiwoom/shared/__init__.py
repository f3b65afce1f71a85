"""Utilities that the service's clients share (the crawler and the action side): the guarded fetcher, time zones.
Nothing here imports the service, the crawler or the action side."""

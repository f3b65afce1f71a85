"""The action side: evidence, notices, the removal monitor, the worker and the officers' console."""

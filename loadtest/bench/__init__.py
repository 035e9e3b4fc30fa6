"""``distil bench``, ``distil tune`` and ``distil overhead``: the served path measured beside the alternatives,
batching tuned, and the CPU each server process spends per request."""

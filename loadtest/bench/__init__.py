"""``distil bench`` and ``distil tune``: the served path measured beside the alternatives, and batching tuned."""

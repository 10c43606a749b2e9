"""specloop's benchmark suite: ``specloop bench`` (see suite.py)."""

"""Generation workers on a Ray cluster behind the one queue (--ray-address): worker.py (the actor body), pool.py."""

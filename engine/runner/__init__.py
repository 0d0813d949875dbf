"""The engine daemon, its workers, and what a trial sees of them (leases, checkpoints)."""

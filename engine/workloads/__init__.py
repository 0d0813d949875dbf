"""Training workloads: the built-in ones, fused trainers, and command workloads."""

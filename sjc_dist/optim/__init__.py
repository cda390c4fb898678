"""Optimisation: the regularisers, the run (one scene), the loop and checkpoints."""

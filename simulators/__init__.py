"""Simulated appliances: per-kind physics, injected faults with ground truth, offline buffering."""

"""Benchmarks that need more than the product: servers of their own, processes to kill. Nothing imports this
package but the `careloop bench` dispatch."""

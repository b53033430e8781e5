"""The benchmarks, one module per benchmark: `careloop bench ingest`, `engine`, `detection` and `chaos`. They
print figures, never pass or fail, each in a database (and for chaos, servers) of its own. Nothing imports this
package but the `careloop bench` dispatch in careloop/cli.py (an import-linter contract in pyproject.toml)."""

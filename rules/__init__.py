"""Declarative rules: documents, compilation to fleet-wide numpy functions, detection lifecycle."""

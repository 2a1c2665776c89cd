"""The pipeline's stages, one module each, in their order: data, validate, train, evaluate,
promote, deploy, rollback, then drift (monitoring); with their helpers (split, lineage, export)
and the demo that runs them all. Each stage is a pure function and a thin `main(argv, env)`.
A stage may import the foundation (mlgate.settings, errors, files, cli), registry, gate,
github and serving, and an earlier stage, never a later one (tests/unit/test_contracts.py).
"""

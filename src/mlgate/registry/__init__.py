"""The model registry: the one place that reads and moves model versions, aliases, the lock and
the pending records (moves), the bounded MLflow connection and registration (tracking), the
booster a version logged (logged), the registry's history read back as lineage and delivery
metrics (audit: `mlgate lineage`, `mlgate metrics`) and its repair (doctor). It may import the
foundation (mlgate.settings, errors, files, cli), gate and github; never pipeline or serving.
"""

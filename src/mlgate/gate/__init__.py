"""The gate: the policy's checks and their evidence (metrics, DeLong's paired test in
significance, latency, the decision threshold) and the decision record the next job consumes
(decision). It may import the foundation (mlgate.settings, errors, files), github's outputs
and serving's trees (latency measures the compiled trees); never pipeline or registry.
"""

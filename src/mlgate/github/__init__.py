"""The GitHub side: step outputs, summaries and annotations (outputs), the REST API client (api),
the pull request's sticky comment (comment), the drift alert (alert) and the Environment that
gates Production (environment). It may import the foundation (mlgate.settings, errors, files,
cli) and gate's decision record; never pipeline, registry or serving.
"""

"""The model server and what it loads: the ASGI app (app: routing, limits, the scoring thread
and process), one module per request format (formats: mlflow_json, csv, oip, and their
registry), the checks they share (matrix), the metrics (metrics), the HTTP protocol limits
(protocol), the bundle format (bundle), the compiled trees runtime (trees), the prediction log
(predlog) and the processes' memory (memory). It runs in the serving image, which holds numpy,
uvicorn and boto3 but none of mlflow, dvc, pandera, evidently, scikit-learn, pandas or
xgboost: it may import only the foundation (mlgate.settings, errors, files, cli) and itself
(tests check both the import graph and an import with those libraries blocked).
"""

"""A typical user's training script: the oracle of the `train-user` figure (bench/steps.py).

What one writes without mlgate: pandas reads the file, a seeded split, `xgboost.train` with the
same parameters and early stopping on the validation part, the holdout AUC, and
`mlflow.xgboost.log_model(..., registered_model_name=...)` with MLflow's defaults (requirement
inference included). Usage: python bench/user-script.py PARAMS.yaml TRACKING_URI [PARTS.npz]

PARTS.npz (the bench's `train-user` figure gives it): the row positions of the holdout,
validation and train parts, in place of the seeded permutation. The bench writes mlgate's own
split of the same file there (not timed), so both processes train on the same rows and early
stopping ends at the same round: the figure then compares what each process does around the
same training, not two splits' luck (a different validation part stopped one after 57 rounds
and the other after 66). Loading the positions costs the script what drawing the
permutation did (milliseconds); the hash split stays inside mlgate's time.
"""

import sys

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
import yaml
from sklearn.metrics import roc_auc_score

settings = yaml.safe_load(open(sys.argv[1]))
data, split, train = settings["data"], settings["split"], settings["train"]
frame = pd.read_csv(data["path"])
y = frame.pop(data["target"])
if len(sys.argv) > 3:
    parts = np.load(sys.argv[3])
    holdout, valid, fit = parts["holdout"], parts["validation"], parts["train"]
else:
    order = np.random.default_rng(split["seed"]).permutation(len(frame))
    n_holdout = int(len(frame) * split["holdout_fraction"])
    n_valid = int(len(frame) * split["validation_fraction"])
    holdout, valid, fit = np.split(order, [n_holdout, n_holdout + n_valid])
dtrain = xgb.DMatrix(frame.iloc[fit], label=y.iloc[fit])
dvalid = xgb.DMatrix(frame.iloc[valid], label=y.iloc[valid])

mlflow.set_tracking_uri(sys.argv[2])
mlflow.set_experiment(settings["model"]["name"] + "-user")
with mlflow.start_run():
    booster = xgb.train(
        train["params"],
        dtrain,
        train["num_boost_round"],
        evals=[(dvalid, "validation")],
        early_stopping_rounds=train["early_stopping_rounds"],
        verbose_eval=False,
    )
    print(f"best iteration {booster.best_iteration}")
    mlflow.log_params(train["params"])
    proba = booster.predict(xgb.DMatrix(frame.iloc[holdout]))
    mlflow.log_metric("holdout_auc", roc_auc_score(y.iloc[holdout], proba))
    mlflow.xgboost.log_model(
        booster, name="model", registered_model_name=settings["model"]["name"] + "-user"
    )

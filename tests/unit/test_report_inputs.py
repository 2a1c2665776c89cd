"""What evidently's reports are run on (mlgate.pipeline.evaluate): the local engine's inputs
stay what they were (the holdout's rows with each model's score and the 0/1 target; every row
of both data versions' features), built here as before the dask engine's reports existed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlgate.pipeline.evaluate import local_inputs
from mlgate.settings import load_settings


def test_the_local_engines_report_inputs_are_as_before(tmp_path):
    settings = load_settings(
        env={}, overrides=["data.target=label", "data.positive_class=yes"], cwd=tmp_path
    )
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=60),
            "n": rng.integers(0, 4, size=60),
            "kind": pd.Categorical(rng.choice(["p", "q"], size=60)),
            "label": rng.choice(["no", "yes"], size=60),
        }
    )
    holdout, reference = frame.iloc[:20], frame.iloc[30:].assign(a=lambda f: f["a"] + 1)
    cand, champ = rng.random(20), rng.random(20)
    inputs = local_inputs(settings, holdout, cand, champ, current=frame, reference=reference)
    labels = (holdout["label"] == "yes").astype(int).to_numpy()
    for built, proba in ((inputs.quality, cand), (inputs.quality_reference, champ)):
        pd.testing.assert_frame_equal(
            built, holdout.assign(probability=proba, label=labels), check_dtype=False
        )
    kinds = {"numerical_columns": ["a", "n"], "categorical_columns": ["kind"]}
    assert inputs.quality_columns == inputs.drift_columns == kinds
    assert inputs.drift is not None
    pd.testing.assert_frame_equal(inputs.drift[0], frame[["a", "n", "kind"]])
    pd.testing.assert_frame_equal(inputs.drift[1], reference[["a", "n", "kind"]])
    assert inputs.about is None  # no sample description: every row
    alone = local_inputs(settings, holdout, cand, None, current=frame, reference=None)
    assert alone.quality_reference is None and alone.drift is None

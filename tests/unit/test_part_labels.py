"""Labels of a part of a version (a Dask partition's rows of one part of the split): a
partition may hold one class of the two, or no row, and still gets the labels the whole
version gives those rows. The oracle: `binary_labels` of the whole version."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlgate.errors import DataError
from mlgate.pipeline import cluster
from mlgate.pipeline.data import binary_labels, part_labels
from mlgate.settings import load_settings

VERSIONS = [  # (labels of a whole version, data.positive_class)
    (["No", "No", "Yes", "No", "No", "No", "Yes", "No"], "Yes"),
    (["No", "No", "Yes", "No", "No", "No", "Yes", "No"], "No"),
    ([0, 0, 1, 0, 0, 0, 1, 0], None),
    ([False, False, True, False, False, False, True, False], None),
    (["0", "0", "1", "0", "0", "0", "1", "0"], None),
    ([1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0], "1"),
]


@pytest.mark.parametrize(("labels", "positive"), VERSIONS)
def test_every_partitioning_gives_the_whole_versions_labels(labels, positive):
    whole = pd.Series(labels)
    expected = binary_labels(whole, positive, "y")
    for bounds in ([0, 2, 3, 8], [0, 0, 1, 8], [0, 7, 8], [0, 8, 8], [0, 1, 2, 3, 4, 5, 6, 7, 8]):
        pairs = zip(bounds, bounds[1:], strict=False)
        got = [part_labels(whole.iloc[a:b], positive, "y") for a, b in pairs]
        assert np.concatenate(got).tolist() == expected.tolist(), bounds


def test_a_part_is_refused_as_the_whole_would_be():
    with pytest.raises(DataError, match="missing values"):
        part_labels(pd.Series(["Yes", None]), "Yes", "y")
    with pytest.raises(DataError, match="not 0 and 1"):
        part_labels(pd.Series(["Yes", "Yes"]), None, "y")
    with pytest.raises(DataError, match="3 classes"):
        part_labels(pd.Series(["a", "b", "c"]), "a", "y")


def test_the_workers_functions_take_a_partition_of_one_class_or_no_holdout_row(tmp_path):
    """`_holdout_part` on the rows of one partition: before, a partition whose holdout rows
    were one class (or none) stopped the stage with 'holds 1 classes'."""
    settings = load_settings(
        env={}, overrides=["data.target=y", "data.positive_class=Yes"], cwd=tmp_path
    )
    part = pd.DataFrame(
        {
            "a": [0.1, 0.2, 0.3, 0.4],
            "y": ["No", "No", "Yes", "No"],
            cluster.PART: np.array([cluster.HOLDOUT, cluster.HOLDOUT, cluster.TRAIN, 0], "int8"),
        }
    )
    assert cluster._holdout_part(part, settings, None, 5)["y"].tolist() == [0, 0]
    none = part.assign(**{cluster.PART: np.int8(cluster.TRAIN)})
    assert cluster._holdout_part(none, settings, None, 5)["y"].tolist() == []

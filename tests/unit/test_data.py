from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlgate.errors import DataError
from mlgate.pipeline import data
from mlgate.settings import load_settings


def settings_for(project: Path, **env: str):
    return load_settings(env=env, params_file=project / "params.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("outs: [", "is not valid YAML"),
        ("just text", "exactly one entry under 'outs:'"),
        ("outs: []", "exactly one entry under 'outs:'"),
        ("outs:\n- md5: abc\n  path: data", "no valid md5 for 'data'"),
        ("outs:\n- md5: " + "a" * 32 + ".dir", "no 'path' under 'outs:'"),
    ],
)
def test_malformed_dvc_file(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "data.dvc").write_text(text)
    with pytest.raises(DataError, match=message) as info:
        data.read_dvc_file(tmp_path / "data.dvc")
    assert "dvc add" in info.value.fix and info.value.exit_code == 3


def test_missing_dvc_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.dvc not found") as info:
        data.read_dvc_file(tmp_path / "data.dvc")
    assert "git checkout -- data.dvc" in info.value.fix


def test_pull_from_the_embedded_remote(project: Path) -> None:
    version = data.pull(settings_for(project))
    assert (project / "data" / "breast_cancer.csv").is_file()
    assert version.dvc_md5.endswith(".dir") and version.remote == "embedded"
    assert version.remote_url == "dvc-remote"  # a remote inside the project: no machine path
    assert version.file_md5 == data.file_md5(project / "data" / "breast_cancer.csv")
    assert (project / version.object_url).is_file()


def test_object_missing_from_the_remote(project: Path) -> None:
    shutil.rmtree(project / "dvc-remote")
    with pytest.raises(DataError, match="missing from DVC remote 'embedded'") as info:
        data.pull(settings_for(project))
    assert "dvc push" in info.value.fix
    assert "67373ef1f5eaff3475417c6c0f287ba2.dir" in str(info.value)


def test_unknown_remote(project: Path) -> None:
    with pytest.raises(DataError, match="DVC remote 'nope' is not configured"):
        data.pull(settings_for(project, MLGATE_DVC_REMOTE="nope"))


def test_data_path_outside_the_tracked_directory(project: Path) -> None:
    with pytest.raises(DataError, match="is not inside 'data'"):
        data.pull(settings_for(project, MLGATE_DATA_PATH="elsewhere/x.csv"))


def test_data_path_not_in_the_pulled_directory(project: Path) -> None:
    with pytest.raises(DataError, match="is not in the pulled data"):
        data.pull(settings_for(project, MLGATE_DATA_PATH="data/other.csv"))


def test_no_pull_refuses_a_workspace_that_differs(project: Path) -> None:
    data.pull(settings_for(project))
    (project / "data" / "breast_cancer.csv").write_text("changed\n")
    with pytest.raises(DataError, match="workspace data differs"):
        data.pull(settings_for(project, MLGATE_DVC_PULL="false"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        ("a,b\n1,\xe9\n".encode("latin-1"), "is not UTF-8 text"),
        (b'a,b\n1,2\n"3,4\n', "cannot parse"),
    ],
)
def test_unreadable_data_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        data.load_frame(path)


def test_a_sharded_version_is_read_as_one_frame_in_shard_order(project: Path) -> None:
    """data.path naming the tracked directory: its version is the manifest (object URL of the
    .dir object), and the runner reads its shards, in name order, as one frame."""
    import pandas as pd

    version = data.pull(settings_for(project, MLGATE_DATA_PATH="data"))
    assert version.path == "data" and version.file_md5 == version.dvc_md5
    assert version.object_url.endswith(f"/{version.dvc_md5[:2]}/{version.dvc_md5[2:]}")
    whole = data.load_frame(project / "data" / "breast_cancer.csv")
    shards = project / "shards"
    shards.mkdir()
    for n, (a, b) in enumerate([(0, 10), (10, 200), (200, len(whole))]):
        whole.iloc[a:b].to_parquet(shards / f"part-{n:02d}.parquet", index=False)
    pd.testing.assert_frame_equal(data.load_frame(shards), whole)
    with pytest.raises(DataError, match="over data.max_bytes"):
        data.load_frame(shards, max_bytes=10)
    whole.iloc[:5].to_csv(shards / "part-99.csv", index=False)
    with pytest.raises(DataError, match="shards of one format"):
        data.load_frame(shards)


def test_a_workspace_that_holds_the_version_is_trusted_by_digest(project: Path) -> None:
    """The second pull finds the data data.dvc names already there (by md5): it neither needs
    the remote nor changes the version it records."""
    first = data.pull(settings_for(project))
    shutil.rmtree(project / "dvc-remote")  # DVC would now fail: nothing is asked of it
    assert data.pull(settings_for(project)) == first
    assert data.pull(settings_for(project, MLGATE_DVC_PULL="false")) == first
    (project / "data" / "breast_cancer.csv").write_text("changed\n")
    out = data.read_dvc_file(project / "data.dvc")
    assert data.workspace_digests(project, (project / "data").resolve(), out) is None


def test_workspace_digests_are_the_ones_dvc_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The oracle is DVC itself: `dvc add` of a nested directory and of a single file."""
    from dvc.repo import Repo

    folder = tmp_path / "data"
    (folder / "b" / "c").mkdir(parents=True)
    (folder / "z.csv").write_text("a,b\n1,2\n")
    (folder / "b" / "y.csv").write_bytes(b"x\r\n1\r\n")  # CRLF: DVC 3 hashes the bytes
    (folder / "b" / "c" / "a b.parquet").write_bytes(bytes(range(256)))
    (tmp_path / "one.csv").write_text("x\n3\n")
    monkeypatch.chdir(tmp_path)  # DVC resolves the targets from the working directory
    repo = Repo.init(str(tmp_path), no_scm=True)
    repo.add(["data", "one.csv"])
    repo.close()
    for name, root in (("data.dvc", folder), ("one.csv.dvc", tmp_path / "one.csv")):
        out = data.read_dvc_file(tmp_path / name)
        assert out.hash_name == "md5"
        digests = data.workspace_digests(tmp_path, root.resolve(), out)
        assert digests is not None, name
        assert all(digest == data.file_md5(path) for path, digest in digests.items())
    (folder / "new.csv").write_text("extra\n")  # a file data.dvc does not list
    assert (
        data.workspace_digests(
            tmp_path, folder.resolve(), data.read_dvc_file(tmp_path / "data.dvc")
        )
        is None
    )
    # a .dvcignore rule changes what DVC lists: DVC decides
    (folder / "new.csv").unlink()
    (tmp_path / ".dvcignore").write_text("# a comment\n*.tmp\n")
    assert (
        data.workspace_digests(
            tmp_path, folder.resolve(), data.read_dvc_file(tmp_path / "data.dvc")
        )
        is None
    )

"""train.engine and the dask section, parsed as a table (docs/dask.md)."""

from __future__ import annotations

import base64
import functools

import pytest

from mlgate.errors import ConfigError
from mlgate.settings import load_settings, tls_material
from tests.tls import Pair, authority, issue


def settings(tmp_path, *overrides: str, env: dict[str, str] | None = None):
    return load_settings(env=env or {}, overrides=list(overrides), cwd=tmp_path)


def test_the_default_engine_is_local_and_needs_no_cluster(tmp_path):
    s = settings(tmp_path)
    assert (s.train.engine, s.dask.scheduler, s.dask.connect_timeout) == ("local", None, 10.0)
    assert s.reports.drift_sample_rows == 20000
    assert settings(tmp_path, "reports.drift_sample_rows=500").reports.drift_sample_rows == 500


def test_the_environment_sets_engine_and_scheduler(tmp_path):
    s = settings(
        tmp_path,
        env={"MLGATE_TRAIN_ENGINE": "dask", "MLGATE_DASK_SCHEDULER": "tcp://10.0.0.5:8786"},
    )
    assert (s.train.engine, s.dask.scheduler) == ("dask", "tcp://10.0.0.5:8786")


def test_dask_training_is_auto_unless_set(tmp_path):
    assert settings(tmp_path).dask.training == "auto"
    assert settings(tmp_path, "dask.training=memory").dask.training == "memory"
    forced = settings(tmp_path, env={"MLGATE_DASK_TRAINING": "external"})
    assert forced.dask.training == "external"


def test_an_empty_scheduler_variable_is_a_local_cluster(tmp_path):
    s = settings(tmp_path, env={"MLGATE_TRAIN_ENGINE": "dask", "MLGATE_DASK_SCHEDULER": ""})
    assert s.dask.scheduler is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.engine=dsak"], 'did you mean "dask"'),
        (["dask.scheduler=tcp://h:1"], "train.engine is local"),
        (["train.engine=dask", "dask.scheduler=scheduler:8786"], "not a scheduler address"),
        (["train.engine=dask", "dask.scheduler=http://h:8786"], "not a scheduler address"),
        (["train.engine=dask", "dask.tls_ca_file=ca.pem"], "must be set together"),
        (
            [
                "train.engine=dask",
                "dask.scheduler=tcp://h:8786",
                "dask.tls_ca_file=a",
                "dask.tls_cert=b",
                "dask.tls_key=c",
            ],
            "files are set but dask.scheduler is tcp://h:8786",
        ),
        (["train.engine=dask", "dask.connect_timeout=0"], "must be positive"),
        (["train.engine=dask", "dask.training=memroy"], 'did you mean "memory"'),
        (["reports.drift_sample_rows=0"], "drift_sample_rows must be at least 1"),
    ],
)
def test_bad_dask_settings_are_refused_with_a_fix(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        settings(tmp_path, *overrides)
    assert info.value.fix and info.value.exit_code == 2


def test_a_tls_scheduler_takes_its_three_files_read_when_connecting(tmp_path):
    """The dask.tls_* files (a runner that holds them) are read and checked by
    `tls_material`, when connecting: the jobs that never connect do not need them."""
    ca, client = _material()
    paths = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "c.pem", "key": tmp_path / "k.pem"}
    paths["ca"].write_text(ca.cert)
    client.write(tmp_path, "c")
    (tmp_path / "c-key.pem").rename(paths["key"])
    s = settings(
        tmp_path,
        "train.engine=dask",
        "dask.scheduler=tls://h:8786",
        "dask.tls_ca_file=ca.pem",
        "dask.tls_cert=c.pem",
        "dask.tls_key=k.pem",
    )
    assert str(s.dask.tls_key) == "k.pem" and s.dask_tls is None
    material = tls_material(s)
    assert material is not None and material.origin.startswith("the files")
    assert (material.ca, material.cert, material.key) == (ca.cert, client.cert, client.key)
    paths["key"].write_text(issue(ca, "other").key)
    with pytest.raises(ConfigError, match="dask.tls_key does not match .* dask.tls_cert"):
        tls_material(s)
    paths["key"].unlink()
    with pytest.raises(ConfigError, match="cannot read dask.tls_key .*k.pem"):
        tls_material(s)


# ---- the DASK_TLS_* secrets: PEM text in the environment (the workflows' secrets) ----


@functools.cache
def _material() -> tuple[Pair, Pair]:
    ca = authority()
    return ca, issue(ca, "client")


def _secrets(**changes: str) -> dict[str, str]:
    ca, client = _material()
    env = {
        "MLGATE_TRAIN_ENGINE": "dask",
        "MLGATE_DASK_SCHEDULER": "tls://10.0.0.5:8786",
        "DASK_TLS_CA": ca.cert,
        "DASK_TLS_CERT": client.cert,
        "DASK_TLS_KEY": client.key,
    }
    return {**env, **changes}


def test_the_secrets_become_checked_pem_text_never_printed(tmp_path):
    ca, client = _material()
    pasted = _secrets(DASK_TLS_KEY="  " + client.key.replace("\n", "\r\n") + "\n ")
    s = settings(tmp_path, env=pasted)
    assert s.dask_tls is not None
    assert (s.dask_tls.ca, s.dask_tls.cert, s.dask_tls.key) == (ca.cert, client.cert, client.key)
    assert s.dask_tls == tls_material(s) and not s.dask_tls.cert_expired
    assert "PRIVATE" not in repr(s) and "CERTIFICATE" not in repr(s)


def test_empty_secrets_are_unset_and_a_tcp_scheduler_needs_none(tmp_path):
    empty = {"DASK_TLS_CA": "", "DASK_TLS_CERT": "", "DASK_TLS_KEY": ""}
    s = settings(tmp_path, env={**_secrets(MLGATE_DASK_SCHEDULER="tcp://h:1"), **empty})
    assert s.dask_tls is None and tls_material(s) is None


def test_a_tls_scheduler_without_material_fails_closed_when_connecting(tmp_path):
    """A fork's pull request: the secrets arrive empty. Loading the settings passes (promote
    never connects); connecting is refused (exit 2), never a plain tcp:// connection."""
    empty = {"DASK_TLS_CA": "", "DASK_TLS_CERT": "", "DASK_TLS_KEY": ""}
    s = settings(tmp_path, env=_secrets(**empty))
    with pytest.raises(ConfigError, match="no TLS material arrived") as info:
        tls_material(s)
    assert "fork" in str(info.value) and info.value.exit_code == 2


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _der_b64() -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(_material()[1].cert.encode())
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def _encrypted_key() -> str:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(_material()[1].key.encode(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    ).decode()


BAD_SECRETS = [
    ({"DASK_TLS_KEY": ""}, "DASK_TLS_CA, DASK_TLS_CERT arrived, DASK_TLS_KEY did not"),
    ({"DASK_TLS_CA": "", "DASK_TLS_KEY": ""}, "DASK_TLS_CERT arrived"),
    ({"DASK_TLS_CERT": "/var/run/dask-tls/client.pem"}, "DASK_TLS_CERT looks like a file path"),
    ({"DASK_TLS_KEY": "client-key.pem"}, "DASK_TLS_KEY looks like a file path"),
    ({"DASK_TLS_CA": "<b64 ca>"}, "DASK_TLS_CA is base64 of a PEM file"),
    ({"DASK_TLS_CERT": "<der>"}, "DASK_TLS_CERT is base64 of binary DER"),
    ({"DASK_TLS_CERT": "hunter2"}, "DASK_TLS_CERT is not PEM text of a certificate"),
    ({"DASK_TLS_CERT": "<one line>"}, "its line breaks were lost"),
    ({"DASK_TLS_CERT": "<truncated>"}, "DASK_TLS_CERT is not a valid PEM certificate"),
    ({"DASK_TLS_CERT": "<key>", "DASK_TLS_KEY": "<cert>"}, "holds a private key, not a cert"),
    ({"DASK_TLS_KEY": "<encrypted>"}, "encrypted private key"),
    ({"DASK_TLS_KEY": "<other key>"}, "the key in DASK_TLS_KEY does not match the certificate"),
    ({"MLGATE_DASK_SCHEDULER": "tcp://h:8786"}, "secrets are set but dask.scheduler is tcp://"),
    ({"MLGATE_DASK_SCHEDULER": ""}, "dask.scheduler is unset"),
    ({"MLGATE_DASK_TLS_CA_FILE": "ca.pem"}, "must be set together"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_SECRETS, ids=[m for _, m in BAD_SECRETS])
def test_bad_secrets_are_refused_before_any_work_naming_what_is_wrong(tmp_path, changes, message):
    ca, client = _material()
    values = {
        "<b64 ca>": _b64(ca.cert),
        "<der>": _der_b64(),
        "<one line>": client.cert.replace("\n", " "),
        "<truncated>": client.cert[:200] + "\n-----END CERTIFICATE-----\n",
        "<key>": client.key,
        "<cert>": client.cert,
        "<encrypted>": _encrypted_key(),
        "<other key>": issue(ca, "other").key,
    }
    env = _secrets(**{k: values.get(v, v) for k, v in changes.items()})
    with pytest.raises(ConfigError, match=message) as info:
        settings(tmp_path, env=env)
    assert info.value.exit_code == 2 and info.value.fix
    said = f"{info.value} {info.value.fix}"
    for secret in (client.key, client.cert, ca.cert):
        assert secret.splitlines()[1] not in said, "no PEM is echoed"
    assert _b64(ca.cert)[:40] not in said


def test_secrets_and_files_together_are_refused(tmp_path):
    env = _secrets(MLGATE_DASK_TLS_CA_FILE="a", MLGATE_DASK_TLS_CERT="b", MLGATE_DASK_TLS_KEY="c")
    with pytest.raises(ConfigError, match="given twice"):
        settings(tmp_path, env=env)


def test_a_tls_refusal_is_told_from_an_unreachable_scheduler(tmp_path):
    """distributed reports a peer's TLS alert either as a chained ssl error or only in the text
    of its CommClosedError (both seen against a real scheduler: tests/integration/
    test_dask_tls.py); either is a TLS failure, a timeout is not."""
    import ssl

    from mlgate.pipeline.cluster import _tls_failure

    s = settings(tmp_path, env=_secrets())
    text_only = OSError(
        "in <TLS (closed)  local=tls://127.0.0.1:1 remote=tls://127.0.0.1:2>: SSLError: "
        "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca (_ssl.c:2580)"
    )
    chained = OSError("in <TLS (closed)>")
    chained.__cause__ = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    timeout = OSError("Timed out trying to connect to tls://10.0.0.5:8786 after 10 s")
    address = "tls://10.0.0.5:8786"
    for exc, code in ((text_only, "TLSV1_ALERT_UNKNOWN_CA"), (chained, "SSLEOFError")):
        found = _tls_failure(exc, address, s.dask_tls)
        assert found is not None and found.exit_code == 14
        assert str(found).startswith("TLS: the handshake") and code in str(found)
    assert _tls_failure(timeout, address, s.dask_tls) is None
    assert _tls_failure(text_only, address, None) is None  # tcp://: no TLS was tried

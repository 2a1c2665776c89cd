"""mlgate: take an XGBoost model from a data change to Production through GitHub Actions."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mlgate")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

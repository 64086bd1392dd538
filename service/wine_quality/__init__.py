"""wine-quality: a scikit-learn model of wine quality, trained reproducibly and served over HTTP."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wine-quality")
except PackageNotFoundError:  # running from a source tree without `pip install`
    __version__ = "0.0.0+unknown"

MODEL_NAME = "wine-quality"

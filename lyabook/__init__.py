"""lyabook: Lyapunov exponents of recurrent neural networks, the reproducible companion
to R. Vogt's dissertation (2023).

Main entry points: `lyapunov_spectrum` (the QR engine), `lyabook.systems` (maps, flows,
the Lorenz system) and `lyabook.rnn` (eight RNN cells with analytic Jacobians).
"""
from .lyapunov import LyapunovResult, kaplan_yorke_dimension, lyapunov_spectrum, orthonormalize
from .clv import CLVResult, covariant_lyapunov_vectors
from . import systems, rnn


def _version() -> str:
    """The installed distribution's version (setuptools-scm, from the git tag at build time);
    a source tree imported without being installed reports the fallback version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lyabook")
    except PackageNotFoundError:
        return "0.1.0+source"


__version__ = _version()

__all__ = [
    "LyapunovResult",
    "kaplan_yorke_dimension",
    "lyapunov_spectrum",
    "orthonormalize",
    "covariant_lyapunov_vectors",
    "CLVResult",
    "systems",
    "rnn",
    "__version__",
]

"""Client for the deltastore model registry HTTP API (docs/http_api.md)."""
from .client import DEFAULT_URL, Client
from .errors import ConnectionFailed, DeltastoreError, DigestMismatch, JobFailed

__version__ = "0.1.0"
__all__ = ["Client", "DeltastoreError", "ConnectionFailed", "DigestMismatch", "JobFailed",
           "DEFAULT_URL", "__version__"]

"""SAMP interoperability: the server as a SAMP client, message queues, and files shared with peers."""

from app.services.samp.config import SampConfig
from app.services.samp.service import SampService

__all__ = ["SampConfig", "SampService"]

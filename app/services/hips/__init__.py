"""HiPS surveys: properties, tiles through a bounded disk cache, Allsky building, viewport covers, overlays."""

from app.services.hips.service import HipsConfig, HipsService, Survey

__all__ = ["HipsConfig", "HipsService", "Survey"]

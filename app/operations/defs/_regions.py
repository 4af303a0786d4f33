"""The request fields every region operation shares: region text or a region file, and its format."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.operations.base import Call
from app.services import region_spectrum
from app.services.region_input import region_text
from app.services.region_spectrum import RegionMask
from app.services.sessions import Dataset

#: Description of the ``regions`` field (text).
REGIONS_TEXT = ("DS9 or CRTF region text (astropy-regions); one result per region, several regions per call. "
                "DS9 `image` coordinates are 1-based, CRTF `pix` 0-based; sky regions use the WCS.")
#: Description of the ``region_file`` field (a path).
REGION_FILE = ("Instead of `regions`: a DS9 (`.reg`) or CRTF (`.crtf`) region file inside the data roots (absolute, "
               "or relative to the first root).")
#: Description of the ``format`` field.
REGION_FORMAT = "`ds9` or `crtf`; default: `crtf` if the text starts with `#CRTF`, else `ds9`."


class RegionSourceFields(BaseModel):
    """``regions`` text or a ``region_file`` path (exactly one), and the optional ``format``."""

    regions: str | None = Field(None, description=REGIONS_TEXT)
    region_file: str | None = Field(None, description=REGION_FILE)
    format: str | None = Field(None, description=REGION_FORMAT)

    def has_regions(self) -> bool:
        """Whether the request names regions at all (text or file)."""
        return self.regions is not None or self.region_file is not None


def plan_regions(call: Call, dataset: Dataset, body: RegionSourceFields) -> tuple[str, str, list[RegionMask]]:
    """``(text, format, masks)`` of a request's regions: the file read inside the roots, then parsed."""
    text = region_text(call.runtime.roots, body.regions, body.region_file)
    masks = region_spectrum.parse_regions(dataset, text, body.format)
    return text, region_spectrum.detect_format(text, body.format), masks

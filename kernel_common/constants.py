"""Physical/statistical constants shared by the kernel trees."""

from __future__ import annotations

import math

#: Robust sigma per median absolute deviation for Gaussian noise:
#: ``sigma = MAD / Phi^-1(3/4) = 1.4826 * MAD`` (``Phi^-1(3/4) = 0.67449``). The contract's
#: rounded value, used by every kernel and service so all robust noises agree.
MAD_TO_SIGMA = 1.4826

#: Full width at half maximum per standard deviation of a Gaussian:
#: ``FWHM = 2 sqrt(2 ln 2) sigma = 2.354820045... sigma``.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

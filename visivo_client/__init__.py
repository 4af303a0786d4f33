"""Python client of the VisIVO GPU compute server.

>>> from visivo_client import Client
>>> client = Client()                       # http://127.0.0.1:8000, token from ~/.visivo_token
>>> cube = client.open("ngc5921_hi_cube.fits.gz")
>>> mom0 = cube.moment(0, channels=(5, 50))  # astropy.io.fits.PrimaryHDU with the 2-D WCS

Heavy calls run as server tasks with a tqdm progress bar (``progress=False`` silences it);
Ctrl-C cancels the task on the server. Errors raise :class:`VisivoError`.
"""

from visivo_client.client import Client
from visivo_client.codec import binary_frames, decode_array
from visivo_client.dataset import Dataset
from visivo_client.errors import VisivoAuthError, VisivoConnectionError, VisivoError
from visivo_client.products import Mesh
from visivo_client.regions import parse_region
from visivo_client.tables import Catalogue, VbtTable

__all__ = ["Catalogue", "Client", "Dataset", "Mesh", "VbtTable", "VisivoAuthError", "VisivoConnectionError",
           "VisivoError", "binary_frames", "decode_array", "parse_region"]

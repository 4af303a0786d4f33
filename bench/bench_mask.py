"""Cost of the noise-aware mask (issue 17 item 3): NGC 5921 moment 0 with and without the mask.

Through the API (a CPU-backend app in process, product cache off), on the demo cube
(56×256×256), channels 5–50, the default mask (snr 3, 1.5 beams, 3 channels, dilation 1):
interleaved repeats, best of each, the load average printed beside them.

``python -m bench.bench_mask --repeat 3``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import DEMO_DATA_ROOT, Settings

MASK = {"snr": 3.0, "spatial_smooth_beams": 1.5, "spectral_smooth_channels": 3, "dilate_channels": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    token = "bench-token-0123456789"
    settings = Settings(token=token, token_file=tmp / "token", output_dir=tmp / "out", data_roots=str(DEMO_DATA_ROOT),
                        backend="cpu", workers=2, heavy_slots=1, product_cache_capacity=0)
    best: dict[str, float] = {}
    with TestClient(create_app(settings)) as client:
        client.headers.update({"X-Visivo-Token": token})
        opened = client.post("/v1/datasets/open", json={"path": "ngc5921_hi_cube.fits.gz"}).json()
        headers = {"X-Visivo-Session": opened["session_id"]}
        base = {"dataset_id": opened["dataset_id"], "order": 0, "channel_start": 5, "channel_end": 50}
        client.post("/v1/products/moment", headers=headers, json=base)  # warm-up (compiled kernels, gzip cache)
        for _ in range(args.repeat):
            for name, extra in (("plain", {}), ("mask", {"mask": MASK})):
                t0 = time.perf_counter()
                body = client.post("/v1/products/moment", headers=headers, json={**base, **extra}).json()
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
                assert body["valid"], body
                if name == "mask":
                    fraction = body["masks"][0]["fraction"]
    print(f"moment 0 without mask: {best['plain']:.3f} s; with mask: {best['mask']:.3f} s "
          f"(ratio {best['mask'] / best['plain']:.1f}); mask keeps {100 * fraction:.2f} % of the voxels; "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

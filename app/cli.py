"""``visivo-server``: start the server (settings from ``VISIVO_*`` environment variables)."""

from __future__ import annotations

import argparse
import logging
import os

import uvicorn


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="visivo-server", description=__doc__)
    parser.add_argument("--host", help="bind address (VISIVO_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (VISIVO_PORT, default 8000)")
    parser.add_argument("--backend", choices=["auto", "gpu", "cpu"], help="compute backend (VISIVO_BACKEND)")
    args = parser.parse_args(argv)
    for name in ("host", "port", "backend"):
        value = getattr(args, name)
        if value is not None:
            os.environ[f"VISIVO_{name.upper()}"] = str(value)

    from app.main import create_app  # noqa: PLC0415  (after the environment is final)
    from app.settings import Settings  # noqa: PLC0415

    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level.lower())


if __name__ == "__main__":
    main()

"""Catalogues and VisIVO Binary Tables on the server, queried into astropy tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.table import Table

from visivo_client.codec import decode_array

if TYPE_CHECKING:
    from visivo_client.client import Client

Filter = dict[str, Any] | Sequence[Any]


def _filters(filters: Sequence[Filter] | None) -> list[dict[str, str]]:
    """``[("flux", ">", 0.1), {"field": ..., "op": ..., "value": ...}]`` → the wire's filter objects."""
    out = []
    for item in filters or []:
        if isinstance(item, dict):
            field, op, value = item["field"], item["op"], item["value"]
        else:
            field, op, value = item
        out.append({"field": str(field), "op": str(op), "value": str(value)})
    return out


def _sort(sort: str | None) -> dict[str, str]:
    """``"flux"`` (ascending) or ``"-flux"`` (descending) → ``sort_field``/``sort_direction``."""
    if not sort:
        return {}
    descending = sort.startswith("-")
    return {"sort_field": sort.lstrip("-+"), "sort_direction": "desc" if descending else "asc"}


class _Remote:
    kind = ""

    def __init__(self, client: Client, info: dict[str, Any]) -> None:
        self._client = client
        self.info = {k: v for k, v in info.items() if k not in ("valid", "error")}
        self.dataset_id: str = info["dataset_id"]
        self.num_rows: int = int(info.get("num_rows") or 0)

    def _query_body(self, filters, sort, limit, offset, fields) -> dict[str, Any]:
        return {"dataset_id": self.dataset_id, "filters": _filters(filters), **_sort(sort), "limit": limit,
                "offset": offset, "fields": list(fields) if fields is not None else None}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.dataset_id} rows={self.num_rows} {self.info.get('path')}>"


class Catalogue(_Remote):
    """A catalogue (CSV/TSV, VOTable, FITS table, IPAC) opened on the server (``client.catalogue(path)``)."""

    @property
    def fields(self) -> list[dict[str, Any]]:
        """``name``, ``type`` and ``unit`` of every column."""
        return self.info.get("fields", [])

    def query(self, filters: Sequence[Filter] | None = None, sort: str | None = None, *, limit: int | None = None,
              offset: int = 0, fields: Sequence[str] | None = None) -> Table:
        """Filtered, sorted page of rows as a table (units from the catalogue).

        ``filters``: ``(field, op, value)`` tuples (or the wire's dicts), AND-combined; ops
        ``< <= > >= = != contains startswith endswith``. ``sort``: a field name, ``-name`` for
        descending. ``meta`` holds ``total_rows`` (matching rows), ``has_more`` and the paging fields.
        """
        answer = self._client._post("/v1/catalogue/query", self._query_body(filters, sort, limit, offset, fields))
        names = answer.get("field_names") or []
        rows = answer.get("rows") or []
        units = {f["name"]: f.get("unit") or None for f in self.fields}
        table = Table(meta={k: v for k, v in answer.items() if k not in ("rows", "valid", "error")})
        for name in names:
            values = [row.get(name) for row in rows]
            kind = next((f.get("type") for f in self.fields if f["name"] == name), None)
            if kind in ("int", "float"):
                table[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64
                                       if kind == "float" or None in values else np.int64)
            else:
                table[name] = values
            table[name].unit = units.get(name)
        return table


class VbtTable(_Remote):
    """A VisIVO Binary Table opened on the server (``client.vbt(path)``)."""

    @property
    def fields(self) -> list[str]:
        return list(self.info.get("field_names") or self.info.get("fields") or [])

    def query(self, filters: Sequence[Filter] | None = None, sort: str | None = None, *, limit: int | None = None,
              offset: int = 0, fields: Sequence[str] | None = None) -> Table:
        """Same semantics as :meth:`Catalogue.query`; columns decoded from base64 little-endian float64."""
        answer = self._client._post("/v1/vbt/query", self._query_body(filters, sort, limit, offset, fields))
        table = Table(meta={k: v for k, v in answer.items() if k not in ("columns", "valid", "error")})
        for name in answer.get("field_names") or []:
            table[name] = decode_array(answer["columns"][name], answer.get("compression"), dtype="<f8")
        return table

"""DuckDB-backed tables for catalogues and VBTs: load, validate fields, filter, sort and page.

Why DuckDB: a columnar, multi-threaded SQL engine that reads CSV natively (type sniffing,
gzip, several files with ``union_by_name``), scans Arrow tables without copying them (VBT
memmaps, astropy tables), and answers "filter + count + sort + one page" on millions of rows
with a top-N sort, so only the requested page ever becomes Python objects.

Safety: every value travels as a bound parameter; a field name is only ever taken from the
table's own schema (validated, then quoted as an identifier), so neither a field nor a value
can inject SQL. After loading, the connection is locked down (no file system access, no
configuration changes).

Semantics shared by catalogues and VBTs (see :func:`TableStore.condition`):

- filters are AND-combined; ``< <= > >= = !=`` compare numerically on numeric fields and as
  text (binary collation) on text fields; ``contains startswith endswith`` apply to text fields
  and ignore case;
- NULL and NaN never satisfy a filter; sorting puts them last in either direction;
- ties are broken by the original row order, so consecutive pages never repeat or skip a row.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from app.errors import InvalidRequest

#: Filter operators of the API, and the spellings we also accept for them.
OPERATORS = ("<", "<=", ">", ">=", "=", "!=", "contains", "startswith", "endswith")
_OPERATOR_ALIASES = {"==": "=", "<>": "!=", "starts_with": "startswith", "ends_with": "endswith"}
_TEXT_OPERATORS = {"contains": "contains", "startswith": "starts_with", "endswith": "ends_with"}

ROW_COLUMN = "__visivo_row"
_TABLE = "catalogue"
_VIEW = "arrow_table"

_INT_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
              "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"}
_FLOAT_TYPES = {"FLOAT", "DOUBLE", "REAL"}
_TEMPORAL_PREFIXES = ("DATE", "TIME", "TIMESTAMP", "INTERVAL")


@dataclass(frozen=True)
class TableField:
    """One column of a table.

    Attributes
    ----------
    name
        Column name as stored.
    sql_type
        DuckDB type (``DOUBLE``, ``VARCHAR`` ...).
    kind
        ``int``, ``float``, ``string``, ``bool``, ``temporal`` or ``other``.
    unit
        Physical unit when the source declares one (VOTable, FITS, IPAC), else ``""``.
    """

    name: str
    sql_type: str
    kind: str
    unit: str = ""

    @property
    def numeric(self) -> bool:
        return self.kind in ("int", "float")

    @property
    def can_be_nan(self) -> bool:
        return self.sql_type in _FLOAT_TYPES

    def describe(self) -> dict[str, Any]:
        """The field as the open response lists it."""
        return {"name": self.name, "type": self.kind, "sql_type": self.sql_type, "numeric": self.numeric,
                "unit": self.unit}


@dataclass(frozen=True)
class Filter:
    """One filter of a query: ``field op value`` (the value as the client sent it)."""

    field: str
    op: str
    value: Any


def kind_of(sql_type: str) -> str:
    """Classify a DuckDB type string."""
    upper = sql_type.upper()
    if upper in _INT_TYPES:
        return "int"
    if upper in _FLOAT_TYPES or upper.startswith("DECIMAL"):
        return "float"
    if upper == "VARCHAR":
        return "string"
    if upper == "BOOLEAN":
        return "bool"
    if upper.startswith(_TEMPORAL_PREFIXES):
        return "temporal"
    return "other"


def quote_identifier(name: str) -> str:
    """SQL identifier quoting (only ever applied to names taken from the schema)."""
    return '"' + name.replace('"', '""') + '"'


def first_line(exc: Exception) -> str:
    """The first line of an exception's message (DuckDB's are multi-line), or its type's name."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def new_connection() -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection (not yet locked down)."""
    return duckdb.connect(":memory:")


def _lock_down(con: duckdb.DuckDBPyConnection) -> None:
    """No file system access and no further configuration changes on this connection."""
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


class TableStore:
    """One table in a private in-memory DuckDB database, queried under a lock.

    Build it with :meth:`from_csv` (the table is loaded into DuckDB) or :meth:`from_arrow`
    (materialised, or scanned in place without a copy).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, relation: str, row_expr: str | None,
                 units: dict[str, str] | None = None, arrow: pa.Table | None = None) -> None:
        self._con = con
        self._relation = quote_identifier(relation)
        self._row_expr = row_expr
        self._arrow = arrow
        self._lock = threading.RLock()
        units = units or {}
        described = con.execute(f"DESCRIBE SELECT * FROM {self._relation}").fetchall()
        self.fields = [TableField(str(name), str(sql_type), kind_of(str(sql_type)), units.get(str(name), ""))
                       for name, sql_type, *_ in described if name != ROW_COLUMN]
        self._by_name = {f.name: f for f in self.fields}
        self.num_rows = int(con.execute(f"SELECT count(*) FROM {self._relation}").fetchall()[0][0])

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_csv(cls, paths: Sequence[Path]) -> TableStore:
        """Load CSV/TSV files (gzip allowed; several files are matched by column name) into DuckDB."""
        con = new_connection()
        files = [str(p) for p in paths]
        sql = f"CREATE TABLE {_TABLE} AS SELECT * FROM read_csv(?::VARCHAR[], header=true, union_by_name=true{{}})"
        try:
            try:
                con.execute(sql.format(""), [files])
            except duckdb.ConversionException:
                # a value far past the sniffer's sample did not fit the sniffed type: sniff everything
                con.execute(sql.format(", sample_size=-1"), [files])
        except duckdb.Error as exc:
            con.close()
            raise InvalidRequest(f"Cannot read CSV: {first_line(exc)}") from None
        return cls._finish_table(con, {})

    @classmethod
    def from_arrow(cls, table: pa.Table, *, units: dict[str, str] | None = None,
                   materialize: bool = True) -> TableStore:
        """A store over an Arrow table: copied into DuckDB, or (``materialize=False``) scanned in place."""
        con = new_connection()
        if materialize:
            con.register("source_arrow", table)
            con.execute(f"CREATE TABLE {_TABLE} AS SELECT * FROM source_arrow")
            con.unregister("source_arrow")
            return cls._finish_table(con, units or {})
        con.register(_VIEW, table)
        _lock_down(con)
        return cls(con, _VIEW, None, units, arrow=table)

    @classmethod
    def _finish_table(cls, con: duckdb.DuckDBPyConnection, units: dict[str, str]) -> TableStore:
        names = [row[0] for row in con.execute(f"DESCRIBE {_TABLE}").fetchall()]
        row_expr = "rowid"
        if any(str(n).lower() == "rowid" for n in names):
            # a user column named "rowid" hides DuckDB's row id: add an explicit row number
            data = con.sql(f"SELECT * FROM {_TABLE}").to_arrow_table()
            data = data.append_column(ROW_COLUMN, pa.array(np.arange(data.num_rows, dtype=np.int64)))
            con.register("with_rows", data)
            con.execute(f"CREATE OR REPLACE TABLE {_TABLE} AS SELECT * FROM with_rows")
            con.unregister("with_rows")
            row_expr = quote_identifier(ROW_COLUMN)
        _lock_down(con)
        return cls(con, _TABLE, row_expr, units)

    def close(self) -> None:
        with self._lock:
            self._con.close()
            self._arrow = None

    # -- schema ---------------------------------------------------------------------------------
    def field(self, name: str) -> TableField:
        """The schema field called ``name`` (exact match, else a unique case-insensitive one).

        Raises
        ------
        InvalidRequest
            Unknown field (the message lists the valid ones).
        """
        found = self._by_name.get(name)
        if found is None:
            matches = [f for f in self.fields if f.name.lower() == str(name).lower()]
            if len(matches) == 1:
                found = matches[0]
        if found is None:
            listed = ", ".join(f.name for f in self.fields[:40]) + (" ..." if len(self.fields) > 40 else "")
            raise InvalidRequest(f"Unknown field '{name}'. Available fields: {listed}.")
        return found

    # -- query building -------------------------------------------------------------------------
    def condition(self, flt: Filter) -> tuple[str, list[Any]]:
        """SQL condition and parameters of one filter (see the module docstring for the rules)."""
        field = self.field(str(flt.field))
        op = _OPERATOR_ALIASES.get(str(flt.op).strip().lower(), str(flt.op).strip().lower())
        if op not in OPERATORS:
            raise InvalidRequest(f"Unknown filter operator '{flt.op}'; use one of {' '.join(OPERATORS)}.")
        if flt.value is None:
            raise InvalidRequest(f"Filter on '{field.name}' has no value.")
        column = quote_identifier(field.name)
        if op in _TEXT_OPERATORS:
            if field.numeric or field.kind == "bool":
                raise InvalidRequest(f"Operator '{op}' applies to text fields; '{field.name}' is {field.kind}. "
                                     "Use < <= > >= = != on it.")
            text = column if field.kind == "string" else f"CAST({column} AS VARCHAR)"
            return f"{_TEXT_OPERATORS[op]}(lower({text}), lower(?))", [str(flt.value)]
        if field.numeric:
            number = _parse_number(flt.value, field)
            if field.can_be_nan:
                # FLOAT is widened so a float32 value is compared exactly with the float64 operand
                value = f"CAST({column} AS DOUBLE)" if field.sql_type == "FLOAT" else column
                return f"(NOT isnan({value}) AND {value} {op} ?)", [number]
            return f"{column} {op} ?", [number]
        if field.kind == "bool":
            if op not in ("=", "!="):
                raise InvalidRequest(f"Boolean field '{field.name}' supports only = and !=.")
            return f"{column} {op} ?", [_parse_bool(flt.value, field)]
        if field.kind == "string":
            return f"{column} {op} ?", [str(flt.value)]
        self._check_cast(str(flt.value), field)
        return f"{column} {op} CAST(? AS {field.sql_type})", [str(flt.value)]

    def _check_cast(self, value: str, field: TableField) -> None:
        try:
            with self._lock:
                self._con.execute(f"SELECT CAST(? AS {field.sql_type})", [value]).fetchall()
        except duckdb.Error:
            raise InvalidRequest(f"Cannot read '{value}' as {field.sql_type} for field '{field.name}'.") from None

    def where(self, filters: Sequence[Filter]) -> tuple[str, list[Any]]:
        """``WHERE`` clause (empty when there are no filters) and its parameters."""
        parts, params = [], []
        for flt in filters:
            sql, values = self.condition(flt)
            parts.append(sql)
            params.extend(values)
        return (" WHERE " + " AND ".join(parts), params) if parts else ("", [])

    def order_by(self, sort_field: str | None, direction: str | None) -> str:
        """``ORDER BY`` clause: the sort field (NULL/NaN last), then the original row order."""
        row = self._row_expr or quote_identifier(ROW_COLUMN)
        if not sort_field:
            return f" ORDER BY {row}" if self._row_expr else ""
        field = self.field(sort_field)
        word = (direction or "asc").strip().lower()
        if word not in ("asc", "desc", "ascending", "descending"):
            raise InvalidRequest(f"Unknown sort_direction '{direction}'; use 'asc' or 'desc'.")
        sql_dir = "DESC" if word.startswith("desc") else "ASC"
        column = quote_identifier(field.name)
        keys = [f"({column} IS NULL OR isnan({column}))"] if field.can_be_nan else []
        keys += [f"{column} {sql_dir} NULLS LAST", row]
        return " ORDER BY " + ", ".join(keys)

    def _ensure_row_column(self) -> None:
        """Scanned Arrow tables get their row-number column only when a sort first needs it."""
        if self._row_expr is not None or self._arrow is None or ROW_COLUMN in self._arrow.column_names:
            return
        n = self._arrow.num_rows
        index = np.arange(n, dtype=np.uint32 if n < 2**32 else np.int64)
        self._arrow = self._arrow.append_column(ROW_COLUMN, pa.array(index))
        self._con.register(_VIEW, self._arrow)

    # -- execution ------------------------------------------------------------------------------
    def _select(self, filters: Sequence[Filter], sort_field: str | None, sort_direction: str | None,
                names: Sequence[str] | None, limit: int, offset: int, project: bool) -> tuple[int, list[TableField],
                                                                                          duckdb.DuckDBPyConnection]:
        if limit < 0 or offset < 0:
            raise InvalidRequest("limit and offset must be >= 0.")
        where, params = self.where(filters)
        chosen = [self.field(n) for n in names] if names else list(self.fields)
        order = self.order_by(sort_field, sort_direction)
        if project:
            columns = ", ".join(_json_expression(f) for f in chosen)
        else:
            columns = ", ".join(quote_identifier(f.name) for f in chosen)
        if sort_field:
            self._ensure_row_column()
        total = int(self._con.execute(f"SELECT count(*) FROM {self._relation}{where}", params).fetchall()[0][0])
        sql = f"SELECT {columns or 'NULL'} FROM {self._relation}{where}{order} LIMIT ? OFFSET ?"
        cursor = self._con.execute(sql, [*params, int(limit), int(offset)])
        return total, chosen, cursor

    def rows(self, filters: Sequence[Filter] = (), *, sort_field: str | None = None,
             sort_direction: str | None = None, limit: int = 50_000, offset: int = 0,
             fields: Sequence[str] | None = None) -> tuple[int, list[str], list[dict[str, Any]]]:
        """``(total_rows after filtering, field names, page rows as dicts)``; only the page is fetched."""
        with self._lock:
            total, chosen, cursor = self._select(filters, sort_field, sort_direction, fields, limit, offset, True)
            records = cursor.fetchall()
        names = [f.name for f in chosen]
        return total, names, [dict(zip(names, record, strict=True)) for record in records]

    def columns(self, filters: Sequence[Filter] = (), *, sort_field: str | None = None,
                sort_direction: str | None = None, limit: int = 50_000, offset: int = 0,
                fields: Sequence[str] | None = None) -> tuple[int, list[str], dict[str, np.ndarray]]:
        """``(total_rows after filtering, field names, page as float64 column vectors)`` (numeric fields)."""
        with self._lock:
            total, chosen, cursor = self._select(filters, sort_field, sort_direction, fields, limit, offset, False)
            data = cursor.fetchnumpy()
        names = [f.name for f in chosen]
        out = {}
        for name, values in zip(names, data.values(), strict=True):
            if isinstance(values, np.ma.MaskedArray):
                values = values.astype(np.float64).filled(np.nan)
            out[name] = np.asarray(values, dtype=np.float64)
        return total, names, out


def _json_expression(field: TableField) -> str:
    """Select expression giving a JSON-friendly Python value (numbers, text, bool; text otherwise)."""
    column = quote_identifier(field.name)
    if field.sql_type.upper().startswith("DECIMAL") or field.sql_type.upper() in ("HUGEINT", "UHUGEINT"):
        return f"CAST({column} AS DOUBLE) AS {column}"
    if field.kind in ("int", "float", "string", "bool"):
        return column
    return f"CAST({column} AS VARCHAR) AS {column}"


def _parse_number(value: Any, field: TableField) -> int | float:
    text = str(value).strip()
    if isinstance(value, bool):
        text = "1" if value else "0"
    if field.kind == "int" and re.fullmatch(r"[+-]?\d+", text) and abs(int(text)) < 2**63:
        return int(text)
    try:
        number = float(text)
    except ValueError:
        raise InvalidRequest(f"Filter value '{value}' for numeric field '{field.name}' is not a number.") from None
    if math.isnan(number):
        raise InvalidRequest(f"Filter value '{value}' for numeric field '{field.name}' is not a number.")
    return number


def _parse_bool(value: Any, field: TableField) -> bool:
    text = str(value).strip().lower()
    if text in ("true", "t", "1", "yes", "y"):
        return True
    if text in ("false", "f", "0", "no", "n"):
        return False
    raise InvalidRequest(f"Filter value '{value}' for boolean field '{field.name}' is not true/false.")

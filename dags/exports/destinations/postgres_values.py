"""Values Postgres refuses, made ones it accepts, so that one bad event never blocks an interval's `COPY`.

Postgres text cannot hold a NUL character nor invalid UTF-8, and `jsonb` takes only valid JSON without
`\\u0000`. ClickHouse's `String` holds any bytes. So every text column is read with its NUL characters
removed (as other exporters do) and invalid UTF-8 replaced by U+FFFD; a `properties` value that is still not
valid JSON is stored as a JSON string of its text (the jsonb column stays valid and nothing is lost); a
`\\u0000` escape in valid JSON is removed. The work is done by ClickHouse in the stream's own query, which
also reports, per row, what it changed; only the rare `\\u0000` escapes are handled here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dags.common import quote_identifier

if TYPE_CHECKING:
    import pyarrow as pa

NUL_VALUES = "__nul_values"  # per row: how many text values had NUL characters removed
UTF8_VALUES = "__invalid_utf8_values"  # per row: how many text values had invalid UTF-8 replaced
JSON_WRAPPED = "__json_wrapped"  # per row: 1 when properties was not valid JSON and is stored as a JSON string
JSON_ESCAPES = "__json_nul_escapes"  # per row: 1 when properties may hold \u0000 escapes, 2 if it also had NULs
FLAG_COLUMNS = (NUL_VALUES, UTF8_VALUES, JSON_WRAPPED, JSON_ESCAPES)
_ESCAPE = re.compile(r"\\(u0000|.)", re.DOTALL)  # each escape of a valid JSON text, left to right


@dataclass
class ValueRepairs:
    """How many values of an interval were changed so that Postgres accepts them (run metadata)."""

    nul_bytes_stripped: int = 0
    invalid_utf8_replaced: int = 0
    invalid_json_wrapped: int = 0

    def add(self, other: ValueRepairs) -> None:
        self.nul_bytes_stripped += other.nul_bytes_stripped
        self.invalid_utf8_replaced += other.invalid_utf8_replaced
        self.invalid_json_wrapped += other.invalid_json_wrapped

    def __bool__(self) -> bool:
        return bool(self.nul_bytes_stripped or self.invalid_utf8_replaced or self.invalid_json_wrapped)


def _is_text(arrow_type: pa.DataType) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def repairing_query(query: str, schema: pa.Schema, json_columns: frozenset[str], skip: frozenset[str]) -> str:
    """`query` with its text columns (but `skip`) made acceptable to Postgres, same names and order, and
    the `FLAG_COLUMNS` after them. The inner columns are renamed first so that no alias shadows a source."""
    renamed = ", ".join(f"{quote_identifier(name)} AS __c{index}" for index, name in enumerate(schema.names))
    outputs: list[str] = []
    nul_terms, utf8_terms = ["0"], ["0"]
    wrapped, escapes = "0", "0"
    for index, column in enumerate(schema):
        raw, name = f"__c{index}", quote_identifier(column.name)
        if column.name in skip or not _is_text(column.type):
            outputs.append(f"{raw} AS {name}")
            continue
        clean = f"replaceAll(toValidUTF8({raw}), '\\0', '')"
        utf8_terms.append(f"NOT isValidUTF8({raw})")
        if column.name in json_columns:
            has_escape = f"(isValidJSON({clean}) AND position({clean}, '\\\\u0000') > 0)"
            nul_terms.append(f"(position({raw}, '\\0') > 0 AND NOT {has_escape})")
            outputs.append(f"if(isValidJSON({clean}), {clean}, toJSONString({clean})) AS {name}")
            wrapped = f"NOT isValidJSON({clean})"
            escapes = f"if({has_escape}, 1 + (position({raw}, '\\0') > 0), 0)"
        else:
            nul_terms.append(f"position({raw}, '\\0') > 0")
            outputs.append(f"{clean} AS {name}")
    flags = [
        f"toUInt32({' + '.join(f'({term})' for term in nul_terms)}) AS {NUL_VALUES}",
        f"toUInt32({' + '.join(f'({term})' for term in utf8_terms)}) AS {UTF8_VALUES}",
        f"toUInt8({wrapped}) AS {JSON_WRAPPED}",
        f"toUInt8({escapes}) AS {JSON_ESCAPES}",
    ]
    columns = ",\n    ".join([*outputs, *flags])
    return f"SELECT\n    {columns}\nFROM (SELECT {renamed} FROM ({query}))"


def repaired_batch(
    batch: pa.RecordBatch, names: list[str], json_columns: frozenset[str]
) -> tuple[pa.RecordBatch, ValueRepairs]:
    """The batch's `names` columns, with the `\\u0000` escapes ClickHouse flagged removed, and what its
    query and this changed."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def total(column: str) -> int:
        return int(pc.sum(batch.column(column)).as_py() or 0)

    repairs = ValueRepairs(total(NUL_VALUES), total(UTF8_VALUES), total(JSON_WRAPPED))
    escapes = batch.column(JSON_ESCAPES)
    flagged = pc.indices_nonzero(escapes).to_pylist()
    json_names = [name for name in names if name in json_columns]
    if not flagged or not json_names:
        return batch.select(names), repairs
    values = batch.column(json_names[0]).to_pylist()
    for row in flagged:
        cleaned = _ESCAPE.sub(lambda match: "" if match.group(1) == "u0000" else match.group(0), values[row])
        if cleaned != values[row] or escapes[row].as_py() == 2:
            repairs.nul_bytes_stripped += 1
        values[row] = cleaned
    json_values = pa.array(values, batch.schema.field(json_names[0]).type)
    columns = [json_values if name == json_names[0] else batch.column(name) for name in names]
    return pa.RecordBatch.from_arrays(columns, names=names), repairs


def repaired_batches(
    stream: Iterable[pa.RecordBatch], names: list[str], json_columns: frozenset[str], repairs: ValueRepairs
) -> Iterator[pa.RecordBatch]:
    """Each batch of the repairing query's `stream` as `repaired_batch` makes it; counts go to `repairs`."""
    for batch in stream:
        repaired, counts = repaired_batch(batch, names, json_columns)
        repairs.add(counts)
        yield repaired

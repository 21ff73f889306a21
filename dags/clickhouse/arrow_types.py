"""Arrow types from ClickHouse column types, as ClickHouse's own Arrow output format writes them.

Over HTTP and on the embedded engine the server encodes results as Arrow itself; over the native protocol the
driver builds Arrow from the column types the server reports, with types and nullability of its own
(`DateTime` as a timestamp, `UUID` as text, every field nullable). Native results are cast to the schema
built here, so a result has the same schema whichever way ClickHouse is reached.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

_DECIMAL_PRECISION = {"Decimal32": 9, "Decimal64": 18, "Decimal128": 38, "Decimal256": 76}
_TIME_UNITS = {0: "s", 3: "ms", 6: "us", 9: "ns"}


def _inner(spec: str, wrapper: str) -> str:
    return spec[len(wrapper) + 1 : -1].strip()


def _split_top_level(spec: str) -> list[str]:
    """`"String, Array(UInt8)"` -> `["String", "Array(UInt8)"]` (commas inside brackets or quotes kept)."""
    parts, depth, quoted, current = [], 0, False, ""
    for char in spec:
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            parts.append(current.strip())
            current = ""
            continue
        current += char
    return [*parts, current.strip()]


def arrow_field(name: str, spec: str) -> pa.Field | None:
    """The field ClickHouse's Arrow format writes for a column of type `spec`; None for a type not mapped here."""
    import pyarrow as pa

    nullable = spec.startswith("Nullable(")
    if nullable:
        spec = _inner(spec, "Nullable")
    type_ = arrow_type(spec)
    return None if type_ is None else pa.field(name, type_, nullable=nullable)


def arrow_type(spec: str) -> pa.DataType | None:  # noqa: PLR0911 - one return per kind of type
    """The Arrow type of a (non-Nullable) ClickHouse type, or None when it is not mapped here."""
    import pyarrow as pa

    if spec.startswith("LowCardinality("):
        spec = _inner(spec, "LowCardinality")
        if spec.startswith("Nullable("):
            spec = _inner(spec, "Nullable")
    simple = {
        "Int8": pa.int8(), "Int16": pa.int16(), "Int32": pa.int32(), "Int64": pa.int64(),
        "UInt8": pa.uint8(), "UInt16": pa.uint16(), "UInt32": pa.uint32(), "UInt64": pa.uint64(),
        "Float32": pa.float32(), "Float64": pa.float64(), "Bool": pa.bool_(), "String": pa.string(),
        "Date": pa.date32(), "Date32": pa.date32(), "UUID": pa.uuid(),
    }  # fmt: skip
    if spec in simple:
        return simple[spec]
    if spec == "DateTime" or spec.startswith("DateTime("):
        return pa.uint32()  # ClickHouse's Arrow format writes DateTime as its seconds since the epoch
    if match := re.fullmatch(r"DateTime64\((\d+)(?:,\s*'([^']*)')?\)", spec):
        unit = _TIME_UNITS.get(int(match.group(1)))
        return None if unit is None else pa.timestamp(unit, tz=match.group(2))
    if match := re.fullmatch(r"FixedString\((\d+)\)", spec):
        return pa.binary(int(match.group(1)))
    if match := re.fullmatch(r"(Decimal\d*)\((\d+)(?:,\s*(\d+))?\)", spec):
        kind, first, second = match.groups()
        if kind == "Decimal":
            precision, scale = int(first), int(second or 0)
        else:
            precision, scale = _DECIMAL_PRECISION[kind], int(first)
        return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    if spec.startswith("Array("):
        item = arrow_field("item", _inner(spec, "Array"))
        return None if item is None else pa.list_(item)
    if spec.startswith("Map("):
        key_spec, value_spec = _split_top_level(_inner(spec, "Map"))
        key, value = arrow_field("key", key_spec), arrow_field("value", value_spec)
        return None if key is None or value is None else pa.map_(key.type, value)
    return None


def server_schema(driver_schema: pa.Schema) -> pa.Schema:
    """The schema ClickHouse's Arrow format gives a result the driver read with `clickhouse_type` metadata.

    Columns of a type not mapped here keep the driver's type.
    """
    import pyarrow as pa

    fields = []
    for field in driver_schema:
        spec = (field.metadata or {}).get(b"clickhouse_type", b"").decode()
        fields.append(arrow_field(field.name, spec) or field.remove_metadata())
    return pa.schema(fields)


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """`batch` (as the driver built it) cast to `schema`."""
    import pyarrow as pa

    return pa.RecordBatch.from_arrays(
        [_cast(column, field.type) for column, field in zip(batch.columns, schema, strict=True)], schema=schema
    )


def _cast(column: pa.Array, target: pa.DataType) -> pa.Array:
    import pyarrow as pa

    if column.type == target:
        return column
    if isinstance(target, pa.UuidType):
        import uuid

        texts = column.to_pylist()
        storage = pa.array([None if text is None else uuid.UUID(text).bytes for text in texts], pa.binary(16))
        return pa.ExtensionArray.from_storage(target, storage)
    if pa.types.is_timestamp(column.type) and pa.types.is_integer(target):
        return column.cast(pa.int64()).cast(target)
    return column.cast(target)

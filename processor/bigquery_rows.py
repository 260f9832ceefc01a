"""Protobuf rows for the Storage Write API, from a descriptor derived from the table's columns.

The descriptor is built in code (proto2: every field optional, so an unset field is NULL) from
the same `Column`s that define the table, and sent as the writer schema. Types follow the
Storage Write API's mapping: STRING -> string, INT64 -> int64, FLOAT64 -> double, BOOL -> bool,
BYTES -> bytes, TIMESTAMP -> int64 microseconds since the Unix epoch, NUMERIC -> string (the
decimal text, exact).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from processor.bigquery_schema import BAD_EVENT_COLUMNS, EVENT_COLUMNS, Column
from processor.records import RefusedData

FieldProto = descriptor_pb2.FieldDescriptorProto
PROTO_TYPE_OF = {
    "STRING": FieldProto.TYPE_STRING,
    "INT64": FieldProto.TYPE_INT64,
    "FLOAT64": FieldProto.TYPE_DOUBLE,
    "BOOL": FieldProto.TYPE_BOOL,
    "BYTES": FieldProto.TYPE_BYTES,
    "TIMESTAMP": FieldProto.TYPE_INT64,
    "NUMERIC": FieldProto.TYPE_STRING,
}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


class RowEncodingError(ValueError, RefusedData):
    """A record holds a value its column cannot take."""


def timestamp_micros(value: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is refused (its zone is unknown)."""
    return (value - EPOCH) // MICROSECOND


def uuid_text(value: uuid.UUID) -> bytes:
    """The canonical 36-character form, as UTF-8 (which a string field takes as is).

    msgspec formats a UUID in C, twice as fast as UUID.__str__: it shows in the encoding rate.
    """
    if type(value) is not uuid.UUID:  # JSON of anything else would not be the text we want
        raise TypeError(f"expected a UUID, got {type(value).__name__}")
    return _json_encode(value)[1:-1]


_json_encode = msgspec.json.Encoder().encode


def numeric_text(value: Decimal) -> str:
    """Fixed-point text (never an exponent, which str() may give), so no digit is lost."""
    if type(value) is not Decimal:  # a float would carry its binary error into the column
        raise TypeError(f"expected a Decimal, got {type(value).__name__}")
    if not value.is_finite():
        raise ValueError(f"{value} is not a number NUMERIC holds")
    return format(value, "f")


# How a field's Python value becomes the protobuf value; absent: stored as is.
CONVERSIONS: dict[type, Callable[[Any], Any]] = {
    uuid.UUID: uuid_text,
    datetime: timestamp_micros,
    Decimal: numeric_text,
}


def descriptor_proto(
    message_name: str, columns: Sequence[Column]
) -> descriptor_pb2.DescriptorProto:
    descriptor = descriptor_pb2.DescriptorProto(name=message_name)
    for number, column in enumerate(columns, start=1):
        descriptor.field.add(
            name=column.name,
            number=number,
            type=PROTO_TYPE_OF[column.type],
            label=FieldProto.LABEL_OPTIONAL,
        )
    return descriptor


def message_class(descriptor: descriptor_pb2.DescriptorProto) -> type[Message]:
    """A message class for `descriptor`, in a pool of its own (no global registration)."""
    file = descriptor_pb2.FileDescriptorProto(
        name=f"clickstream_{descriptor.name}.proto", syntax="proto2"
    )
    file.message_type.add().CopyFrom(descriptor)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(descriptor.name))


def compile_encoder(
    message: type[Message], columns: Sequence[Column]
) -> Callable[[msgspec.Struct], bytes]:
    """One straight-line function per schema: `row.<field> = convert(record.<field>)` each.

    Generated (as dataclasses generates __init__) because a loop over the columns spends
    more time in the loop than in protobuf: the straight-line form is ~35% faster, which the
    encoding benchmark (benchmarks/test_bigquery_bench.py) shows.
    """
    namespace: dict[str, Any] = {"Message": message}
    lines = ["def encode(record):", "    row = Message()"]
    for column in columns:
        value = "value"
        if column.python_type in CONVERSIONS:
            namespace[f"convert_{column.name}"] = CONVERSIONS[column.python_type]
            value = f"convert_{column.name}(value)"
        lines.append(f"    value = record.{column.name}")
        guard = "" if column.required else "if value is not None: "
        lines.append(f"    {guard}row.{column.name} = {value}")
    lines.append("    return row.SerializeToString()")
    exec("\n".join(lines), namespace)  # source built above from identifiers only
    encode: Callable[[msgspec.Struct], bytes] = namespace["encode"]
    return encode


@dataclass(frozen=True, slots=True)
class RowFormat:
    columns: tuple[Column, ...]
    descriptor: descriptor_pb2.DescriptorProto
    message: type[Message]
    encode_one: Callable[[msgspec.Struct], bytes]

    def encode(self, records: Sequence[msgspec.Struct]) -> list[bytes]:
        """Serialized rows, or RowEncodingError naming the record's field and the problem."""
        encode_one = self.encode_one
        try:
            return [encode_one(record) for record in records]
        except (TypeError, ValueError, OverflowError):
            for index, record in enumerate(records):
                self.explain(index, record)
            raise

    def explain(self, index: int, record: msgspec.Struct) -> None:
        """Raise RowEncodingError for the first field of `record` that cannot be encoded."""
        row = self.message()
        for column in self.columns:
            value = getattr(record, column.name)
            if value is None:
                if column.required:
                    raise RowEncodingError(
                        f"row {index}: {column.name} is required ({column.type}) but is None"
                    )
                continue
            try:
                convert = CONVERSIONS.get(column.python_type)
                setattr(row, column.name, value if convert is None else convert(value))
            except (TypeError, ValueError, OverflowError) as exc:
                raise RowEncodingError(
                    f"row {index}: {column.name} ({column.type}) cannot hold {value!r}: {exc}"
                ) from exc


def row_format(message_name: str, columns: tuple[Column, ...]) -> RowFormat:
    descriptor = descriptor_proto(message_name, columns)
    message = message_class(descriptor)
    return RowFormat(columns, descriptor, message, compile_encoder(message, columns))


EVENT_ROWS = row_format("EventRow", EVENT_COLUMNS)
BAD_EVENT_ROWS = row_format("BadEventRow", BAD_EVENT_COLUMNS)

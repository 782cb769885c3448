"""Spreadsheet exports and LEDES invoices as canonical entries; pure (no SQL, web or HTTP).

A *mapping* (a YAML file, or one shipped with ocgate) says which column of a firm's export is which canonical
field and how its values are written: date formats, number formats, hours, minutes or units, code
translations, constants, ids built from a hash of columns, blank rows. ``docs/mappings.md`` is its manual.

* ``load_mapping(path_or_builtin_name) -> Mapping``: checked in three stages like a rule file (YAML, the JSON
  Schema of ``schema.mapping_schema()``, meaning); :class:`MappingError` lists ``file:line:col: where: what``.
* ``builtin_mappings() -> {name: title}``: the mappings under ``engine/data/mappings/``.
* ``read_mapped(path, mapping) -> MappedRead``: the entries of a CSV or ``.xlsx`` file, and each row left out
  with its row number and column (:class:`RowProblem`); :class:`UnreadableFile` when the file cannot be read.
* ``ledes_entries(data, file) -> MappedRead``: the fee and expense lines of a LEDES 1998B or 98BI file.
"""

from engine.mapping.ledes import LEDES_FIELDS, ledes_entries
from engine.mapping.loader import FieldRule, Mapping, MappingError, builtin_mappings, load_mapping, load_mapping_text
from engine.mapping.reader import MappedRead, RowProblem, UnreadableFile, read_mapped

__all__ = [
    "LEDES_FIELDS",
    "FieldRule",
    "MappedRead",
    "Mapping",
    "MappingError",
    "RowProblem",
    "UnreadableFile",
    "builtin_mappings",
    "ledes_entries",
    "load_mapping",
    "load_mapping_text",
    "read_mapped",
]

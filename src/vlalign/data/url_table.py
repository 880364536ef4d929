"""Reading URL lists: one file or a sharded set (`part-{00000..00127}.parquet`) of parquet, CSV, TSV or JSONL
files, the text ones optionally gzipped. `UrlTable` streams them in chunks of rows, so no list is ever held whole,
and reads any chunk again from its small JSON locator without reading what comes before it.

Every row comes out as `url`, `caption`, the extra columns, then `row_error` (text), missing (NaN) for a good
row. A row that cannot be read (a JSONL line that is not valid JSON or not an object, or has keys the file's first
object lacks; a CSV/TSV record with the wrong number of fields or that the csv module refuses; a line that is not
UTF-8) still takes its place, with every other column missing and `row_error` naming the file, the line and the
problem, so a bad row neither stops a job nor disappears from its counts.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import json
import threading
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate, islice
from json.scanner import make_scanner
from operator import itemgetter
from pathlib import Path
from typing import IO

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from braceexpand import braceexpand

ROW_ERROR = "row_error"
RESERVED = {"url", "caption", ROW_ERROR}
# The types a CSV column may turn out to have, in the order they are tried, with what all its values must look like.
CSV_TYPES = [
    (pa.int64(), r"^-?[0-9]+$"),
    (pa.float64(), r"(?i)^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]+)?$|^[+-]?(inf|infinity|nan)$"),
    (pa.bool_(), r"(?i)^(true|false)$"),
]
BOM = "\ufeff".encode()
GZIP_BUFFER = 1 << 20
EXCERPT = 200  # characters of a bad row quoted in its row_error
SHOWN_MISSING = 5  # missing shards named in the error; the rest are counted
JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true/false",
              type(None): "null"}  # fmt: skip
_NULL_TEXT = pa.scalar(None, pa.string())
_BLANK = object()  # what parsing a blank JSONL line gives: no row at all


def expand_paths(pattern: str) -> list[Path]:
    """The files a pattern names, in order: `{00000..00127}` ranges (zero padding kept), `{a,b}` alternatives,
    nested and several braces, and globs (`metadata/*.parquet`, DataComp's hash-named shards) in sorted order;
    a pattern without either names one file. Missing files, or a glob matching none, are an error."""
    paths = []
    for name in braceexpand(pattern):
        if glob.has_magic(name):
            found = sorted(Path(match) for match in glob.glob(name))
            if not found:
                raise FileNotFoundError(f"{pattern}: {name} matches no file")
            paths += found
        else:
            paths.append(Path(name))
    missing = [path for path in paths if not path.is_file()]
    if missing and len(paths) == 1:
        raise FileNotFoundError(f"{pattern} is not a file")
    if missing:
        shown = ", ".join(str(path) for path in missing[:SHOWN_MISSING])
        more = f" and {len(missing) - SHOWN_MISSING} more" if len(missing) > SHOWN_MISSING else ""
        raise FileNotFoundError(f"{pattern}: {len(missing)} of its {len(paths)} files are missing or not files: "
                                f"{shown}{more}")  # fmt: skip
    return paths


@dataclass(frozen=True, eq=False)  # rows are a DataFrame, which has no truth value to compare by
class Chunk:
    """Consecutive rows of one file. `locator` (JSON-ready) is what `UrlTable.read` needs to read them again."""

    file: int  # index into UrlTable.files
    first_row: int  # 0-based within the file, header not counted
    locator: dict
    rows: pd.DataFrame


class UrlTable:
    """A URL list, one file or several, read in chunks. Each file's rows are cut into chunks of `chunk_rows` (its
    last chunk may be shorter); a chunk never spans two files. Locators (all carry `file`, the index into `files`):

    - parquet: `{"row_group": g, "offset": k}`; reading decodes row group g from its start.
    - CSV, TSV, JSONL: `{"byte": b, "line": l, "row": r}`: the byte offset of the chunk's first record, its line
      number (1-based, for messages) and its row number. For a .gz file the byte offset is into the decompressed
      text, so reading there decompresses the file from its start (but parses nothing before b).

    url, caption and `key_col` are read as text (a caption "NA" or "null" stays text, a uid of digits keeps its
    leading zeros); an empty one is missing. Extra columns keep their parquet or JSON types; in CSV/TSV, a column of
    a chunk whose values all read as integers becomes integers (floats when some are empty), likewise numbers and
    true/false, else text. An empty text file (no header, no JSON object) is a shard with no rows.
    """

    def __init__(self, pattern: str, url_col: str, caption_col: str, key_col: str | None = None):
        self.url_col, self.caption_col = url_col, caption_col
        self.files = expand_paths(pattern)
        self._text_columns = {url_col, caption_col} | ({key_col} if key_col else set())
        self._files = [_open_table(path, self._text_columns) for path in self.files]
        self.extras = self._extras()

    def _extras(self) -> list[str]:
        """The extra columns, checked to be the same in every file that has columns."""
        extras: list[str] | None = None
        for path, table in zip(self.files, self._files, strict=True):
            if table.columns is None:
                continue
            missing = [col for col in (self.url_col, self.caption_col) if col not in table.columns]
            if missing:
                raise ValueError(f"{path}: no column {missing} (columns: {table.columns}); set url_col / caption_col")
            own = [col for col in table.columns if col not in (self.url_col, self.caption_col)]
            clashes = RESERVED.intersection(own)
            if clashes:
                raise ValueError(f"{path}: extra columns {sorted(clashes)} would shadow the url/caption/row_error "
                                 f"columns")  # fmt: skip
            if extras is None:
                extras, first = own, path
            elif set(own) != set(extras):
                raise ValueError(f"{path}: columns {table.columns} differ from those of {first} "
                                 f"({[self.url_col, self.caption_col, *extras]}); all files of a list need the same")
        return extras or []

    def scan(self, chunk_rows: int) -> Iterator[Chunk]:
        """Every row of every file, in order, in chunks of `chunk_rows` rows."""
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
        for index, table in enumerate(self._files):
            for first_row, locator, rows in table.chunks(chunk_rows):
                yield Chunk(index, first_row, {"file": index, **locator}, self._shaped(rows))

    def read(self, locator: dict, n_rows: int) -> pd.DataFrame:
        """The `n_rows` rows from where a chunk's locator points: the chunk's rows, as `scan` gave them."""
        return self._shaped(self._files[locator["file"]].read(locator, n_rows))

    def count_rows(self) -> int:
        """Rows in all files: parquet from its metadata, JSONL by counting lines that are not blank, CSV/TSV by
        parsing them (a quoted field may span lines), without building tables."""
        return sum(table.count() for table in self._files)

    def empty(self) -> pd.DataFrame:
        """No rows, with the columns (and, where known without rows, the types) that chunks have."""
        text = {"url", "caption", ROW_ERROR, *self._text_columns}
        return pd.DataFrame({col: pd.Series(dtype="str" if col in text else object)
                             for col in ["url", "caption", *self.extras, ROW_ERROR]})  # fmt: skip

    def _shaped(self, rows: pd.DataFrame) -> pd.DataFrame:
        rows = rows.rename(columns={self.url_col: "url", self.caption_col: "caption"})
        return rows[["url", "caption", *self.extras, ROW_ERROR]]


def extras_as_json(rows: pd.DataFrame, extras: list[str]) -> list[dict]:
    """The extra columns of each row as JSON-ready dicts (NaN -> null, numpy and time types -> JSON)."""
    if not extras:
        return [{} for _ in range(len(rows))]
    return json.loads(rows[extras].to_json(orient="records", date_format="iso"))


def _open_table(path: Path, text_columns: set[str]) -> _ParquetTable | _CsvTable | _JsonlTable:
    name = path.name.lower()
    gz = name.endswith(".gz")
    kind = name.removesuffix(".gz").rpartition(".")[2]
    if kind == "parquet" and not gz:
        return _ParquetTable(path, text_columns)
    if kind in ("csv", "tsv"):
        return _CsvTable(path, gz, "," if kind == "csv" else "\t", text_columns)
    if kind == "jsonl":
        return _JsonlTable(path, gz, text_columns)
    raise ValueError(f"{path}: a URL list must be .parquet, .csv, .tsv or .jsonl (the text ones optionally .gz)")


def _open_binary(path: Path, gz: bool) -> IO[bytes]:
    if gz:  # buffered in C: a GzipFile's own readline is a Python call per line, a third of the time spent
        return io.BufferedReader(gzip.GzipFile(path, "rb"), buffer_size=GZIP_BUFFER)
    return open(path, "rb")


def _text_array(values) -> pa.Array:
    """Values as text: an empty one is missing; a JSON number, true/false or object becomes its JSON text."""
    try:
        array = pa.array(values, type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        array = pa.array([v if v is None or isinstance(v, str) else json.dumps(v) for v in values], type=pa.string())
    return _empty_as_missing(array)


def _empty_as_missing(array: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(array, ""), _NULL_TEXT, array)


def _errors_array(errors: dict[int, str], n_rows: int) -> pa.Array:
    messages = [None] * n_rows
    for position, message in errors.items():
        messages[position] = message
    return pa.array(messages, type=pa.string())


def _frame(columns: dict[str, pa.Array | pd.Series]) -> pd.DataFrame:
    return pd.DataFrame({name: col.to_pandas() if isinstance(col, pa.Array) else col
                         for name, col in columns.items()})  # fmt: skip


def _transposed(rows: list, width: int) -> list[list]:
    """Rows of `width` values as columns (faster than zip(*rows) for many rows)."""
    return [list(map(itemgetter(col), rows)) for col in range(width)]


def _excerpt(text: str) -> str:
    return text[:EXCERPT] + ("..." if len(text) > EXCERPT else "")


def _lines(path: Path, first: int, last: int) -> str:
    return f"{path} line {first}" if first == last else f"{path} lines {first}-{last}"


class _ParquetTable:
    def __init__(self, path: Path, text_columns: set[str]):
        self.path, self.text_columns = path, text_columns
        with pq.ParquetFile(path) as parquet:
            schema = parquet.schema_arrow
            # An index pandas stored alongside the columns is not a column of the list.
            index = {col for col in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(col, str)}
            self.columns = [name for name in schema.names if name not in index]
            self.schema = pa.schema([schema.field(name) for name in self.columns])
            sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.metadata.num_row_groups)]
        self.group_starts = list(accumulate(sizes, initial=0))[:-1]
        self.n_rows = sum(sizes)
        self._lock = threading.Lock()
        self._cursor: tuple[tuple[int, int], Iterator[pa.Table]] | None = None  # ((next row, rows a read), tables)

    def chunks(self, chunk_rows: int) -> Iterator[tuple[int, dict, pd.DataFrame]]:
        with pq.ParquetFile(self.path) as parquet:
            batches = parquet.iter_batches(batch_size=min(chunk_rows, self.n_rows or 1), columns=self.columns)
            first_row = 0
            for table in _exact_tables(batches, chunk_rows):
                yield first_row, self._locator(first_row), self._frame(table)
                first_row += table.num_rows

    def _locator(self, row: int) -> dict:
        group = bisect_right(self.group_starts, row) - 1
        return {"row_group": group, "offset": row - self.group_starts[group]}

    def read(self, locator: dict, n_rows: int) -> pd.DataFrame:
        start = self.group_starts[locator["row_group"]] + locator["offset"]
        with self._lock:
            # A reader goes on where the last read ended: a job reading its chunks in order decodes each row group
            # once, not once per chunk (pandas writes groups of up to a million rows).
            if self._cursor is None or self._cursor[0] != (start, n_rows):
                self._cursor = ((start, n_rows), self._tables(locator, n_rows))
            table = next(self._cursor[1], None) if n_rows > 0 else None
            end = start + (table.num_rows if table is not None else 0)
            self._cursor = ((end, n_rows), self._cursor[1])
        return self._frame(table if table is not None else self.schema.empty_table())

    def _tables(self, locator: dict, n_rows: int) -> Iterator[pa.Table]:
        with pq.ParquetFile(self.path) as parquet:
            batches = parquet.iter_batches(batch_size=min(n_rows, self.n_rows or 1), columns=self.columns,
                                           row_groups=range(locator["row_group"], len(self.group_starts)))  # fmt: skip
            yield from _exact_tables(batches, n_rows, skip=locator["offset"])

    def count(self) -> int:
        return self.n_rows

    def _frame(self, table: pa.Table) -> pd.DataFrame:
        columns: dict[str, pa.Array | pd.Series] = {}
        for name in self.columns:
            column = table.column(name).combine_chunks()
            if name in self.text_columns:
                column = _empty_as_missing(column if column.type == pa.string() else column.cast(pa.string()))
            columns[name] = column
        columns[ROW_ERROR] = pa.nulls(table.num_rows, pa.string())
        return _frame(columns)


def _exact_tables(batches: Iterator[pa.RecordBatch], n_rows: int, skip: int = 0) -> Iterator[pa.Table]:
    """Tables of exactly `n_rows` rows (the last may be shorter) from record batches of any size, after dropping
    the first `skip` rows; only the rows of one table are held at a time."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        if skip >= batch.num_rows:
            skip -= batch.num_rows
            continue
        batch, skip = batch.slice(skip), 0
        pending.append(batch)
        held += batch.num_rows
        while held >= n_rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, n_rows)
            pending, held = table.slice(n_rows).to_batches(), held - n_rows
    if held:
        yield pa.Table.from_batches(pending)


class _TextTable:
    """What CSV, TSV and JSONL files share: chunks cut by a cursor that knows where its next record starts."""

    path: Path
    gz: bool
    columns: list[str] | None  # None: an empty file
    data_byte: int  # where the first record starts
    data_line: int

    def _cursor(self, stream: IO[bytes], line: int) -> _CsvCursor | _JsonlCursor:
        raise NotImplementedError

    def _frame(self, records: list, errors: dict[int, str]) -> pd.DataFrame:
        raise NotImplementedError

    def chunks(self, chunk_rows: int) -> Iterator[tuple[int, dict, pd.DataFrame]]:
        if self.columns is None:
            return
        with _open_binary(self.path, self.gz) as stream:
            stream.seek(self.data_byte)
            cursor = self._cursor(stream, self.data_line)
            first_row = 0
            while True:
                locator = {"byte": stream.tell(), "line": cursor.line + 1, "row": first_row}
                records, errors = cursor.take(chunk_rows)
                if not records:
                    return
                yield first_row, locator, self._frame(records, errors)
                first_row += len(records)

    def read(self, locator: dict, n_rows: int) -> pd.DataFrame:
        with _open_binary(self.path, self.gz) as stream:
            stream.seek(locator["byte"])
            records, errors = self._cursor(stream, locator["line"]).take(n_rows)
        return self._frame(records, errors)

    def count(self) -> int:
        if self.columns is None:
            return 0
        with _open_binary(self.path, self.gz) as stream:
            stream.seek(self.data_byte)
            cursor = self._cursor(stream, self.data_line)
            total = 0
            while records := cursor.take(1 << 16)[0]:
                total += len(records)
        return total


class _CsvCursor:
    """Records of a CSV/TSV stream read from a record boundary on. The csv module takes the stream's lines one at a
    time and never reads ahead, so after each record `stream.tell()` is where the next record starts, even when
    quoted fields span lines."""

    def __init__(self, stream: IO[bytes], path: Path, delimiter: str, width: int, line: int):
        self.reader = csv.reader(map(bytes.decode, stream), delimiter=delimiter)
        self.path, self.width = path, width
        self.lines_before = line - 1  # the file's lines before the reader's first
        self.undecodable = 0  # lines the reader never saw, since they are not UTF-8

    @property
    def line(self) -> int:
        """The number of the last line read."""
        return self.lines_before + self.reader.line_num + self.undecodable

    def take(self, n_rows: int) -> tuple[list[list[str]], dict[int, str]]:
        """Up to `n_rows` records (fewer only at the end of the file), blank lines skipped; a record that cannot be
        used takes its place as empty fields, its problem under its position in the second value."""
        records: list[list[str]] = []
        errors: dict[int, str] = {}
        reader, width = self.reader, self.width
        while len(records) < n_rows:
            done = reader.line_num  # the reader's lines before the next record (the property costs more)
            try:
                for record in reader:
                    if len(record) == width:
                        records.append(record)
                    elif record and (len(record) > 1 or record[0].strip()):
                        problem = f"{len(record)} fields where the header has {width}: {_excerpt(repr(record))}"
                        self._reject(records, errors, self._line_after(done), problem)
                    if len(records) == n_rows:
                        break
                    done = reader.line_num
                else:
                    break  # end of the file
            except csv.Error as exc:  # e.g. a quote left open until the field grew past csv.field_size_limit()
                self._reject(records, errors, self._line_after(done), str(exc))
            except UnicodeDecodeError as exc:
                # The reader drops the record it was building and goes on with the next line.
                first = self._line_after(done)
                self.undecodable += 1
                self._reject(records, errors, first, f"not UTF-8 ({exc.reason}): {_excerpt(repr(exc.object))}")
        return records, errors

    def _line_after(self, reader_lines: int) -> int:
        """The file's line number of the line after the reader's `reader_lines`-th."""
        return self.lines_before + reader_lines + self.undecodable + 1

    def _reject(self, records: list, errors: dict[int, str], first_line: int, problem: str) -> None:
        """A bad record, from `first_line` to the last line read, takes its place as empty fields."""
        errors[len(records)] = f"{_lines(self.path, first_line, self.line)}: {problem}"
        records.append([""] * self.width)


class _CsvTable(_TextTable):
    def __init__(self, path: Path, gz: bool, delimiter: str, text_columns: set[str]):
        self.path, self.gz, self.delimiter, self.text_columns = path, gz, delimiter, text_columns
        self.columns, self.data_byte, self.data_line = None, 0, 1
        with _open_binary(path, gz) as stream:
            reader = csv.reader(map(bytes.decode, stream), delimiter=delimiter)
            try:
                header = next((record for record in reader if any(field.strip() for field in record)), None)
            except (csv.Error, UnicodeDecodeError) as exc:
                raise ValueError(f"{path}: its header line cannot be read: {exc}") from exc
            if header is None:
                return
            header[0] = header[0].removeprefix(BOM.decode())
            if len(set(header)) != len(header):
                raise ValueError(f"{path}: the header names a column twice (columns: {header})")
            self.columns, self.data_byte, self.data_line = header, stream.tell(), reader.line_num + 1

    def _cursor(self, stream: IO[bytes], line: int) -> _CsvCursor:
        return _CsvCursor(stream, self.path, self.delimiter, len(self.columns), line)

    def _frame(self, records: list[list[str]], errors: dict[int, str]) -> pd.DataFrame:
        columns: dict[str, pa.Array | pd.Series] = {}
        for name, column in zip(self.columns, _transposed(records, len(self.columns)), strict=True):
            text = _text_array(column)
            columns[name] = text if name in self.text_columns else _typed(text)
        columns[ROW_ERROR] = _errors_array(errors, len(records))
        return _frame(columns)


def _typed(text: pa.Array) -> pa.Array:
    """A CSV column as integers, else numbers, else true/false, when all its values read so; else the text."""
    for kind, pattern in CSV_TYPES:
        # Checking first, as a failed cast costs ten times more than the check.
        if pc.all(pc.match_substring_regex(text, pattern)).as_py() is not False:
            try:
                return text.cast(kind)
            except pa.ArrowInvalid:  # e.g. an integer beyond int64
                continue
    return text


class _JsonlCursor:
    """Rows of a JSONL stream read from a line boundary on, one JSON object a line; `stream.tell()` is always where
    the next line starts, since lines are taken from the stream one at a time."""

    scan_value = staticmethod(make_scanner(json.JSONDecoder()))  # json.loads without its checks for whitespace

    def __init__(self, stream: IO[bytes], path: Path, columns: list[str], line: int):
        self.stream, self.path, self.columns = stream, path, columns
        self.known = set(columns)
        self.values = itemgetter(*columns)
        self.line = line - 1  # the number of the last line read

    def take(self, n_rows: int) -> tuple[list[tuple], dict[int, str]]:
        """Up to `n_rows` rows as tuples in column order (fewer only at the end of the file), blank lines skipped;
        a line that cannot be used takes its place as missing values, its problem under its position."""
        rows: list[tuple] = []
        errors: dict[int, str] = {}
        parse, values, width = self.parse, self.values, len(self.columns)  # locals: this loop is the hot one
        while len(rows) < n_rows:
            lines = list(islice(self.stream, n_rows - len(rows)))
            if not lines:
                break
            for line, raw in enumerate(lines, self.line + 1):
                try:
                    value = parse(raw)
                except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
                    self._reject(rows, errors, line, f"not valid JSON ({exc}): {_excerpt(repr(raw))}")
                    continue
                if value is _BLANK:
                    continue
                if type(value) is dict and len(value) == width:
                    try:
                        rows.append(values(value))
                        continue
                    except KeyError:
                        pass
                self._add_odd(rows, errors, line, value)
            self.line += len(lines)
        return rows, errors

    @classmethod
    def parse(cls, raw: bytes) -> object:
        """The JSON value on a line, or _BLANK for a blank line; ValueError when it holds anything else."""
        text = raw.decode()
        try:
            value, end = cls.scan_value(text, 0)
        except StopIteration:  # nothing the scanner can start a value with: blank, leading spaces or garbage
            return _BLANK if not raw.strip() else json.loads(text)
        if end != len(text) and not text[end:].isspace():
            raise ValueError(f"more after the JSON value at column {end + 1}")
        return value

    def _add_odd(self, rows: list[tuple], errors: dict[int, str], line: int, value: object) -> None:
        """A row from a value that is not an object with exactly the file's keys."""
        if type(value) is not dict:
            kind = JSON_KINDS.get(type(value), type(value).__name__)
            self._reject(rows, errors, line, f"{kind} where a JSON object was expected: {_excerpt(json.dumps(value))}")
            return
        unknown = [key for key in value if key not in self.known]
        if unknown:
            self._reject(rows, errors, line, f"keys {unknown} that the file's first object has not (its keys: "
                                       f"{self.columns}): {_excerpt(json.dumps(value))}")  # fmt: skip
            return
        rows.append(tuple(value.get(col) for col in self.columns))  # keys left out are missing values

    def _reject(self, rows: list[tuple], errors: dict[int, str], line: int, problem: str) -> None:
        errors[len(rows)] = f"{self.path} line {line}: {problem}"
        rows.append((None,) * len(self.columns))


class _JsonlTable(_TextTable):
    def __init__(self, path: Path, gz: bool, text_columns: set[str]):
        self.path, self.gz, self.text_columns = path, gz, text_columns
        with _open_binary(path, gz) as stream:
            self.data_byte = len(BOM) if stream.read(len(BOM)) == BOM else 0
        self.columns, self.data_line = self._first_object_keys(), 1

    def _first_object_keys(self) -> list[str] | None:
        """The columns: the keys of the first line that holds a JSON object; None when every line is blank."""
        lines = 0
        with _open_binary(self.path, self.gz) as stream:
            stream.seek(self.data_byte)
            for raw in stream:
                try:
                    value = _JsonlCursor.parse(raw)
                except (ValueError, RecursionError):
                    value = None
                if type(value) is dict:
                    return list(value)
                lines += value is not _BLANK
        if lines:
            raise ValueError(f"{self.path}: none of its {lines} lines is a JSON object, so it has no columns")
        return None

    def _cursor(self, stream: IO[bytes], line: int) -> _JsonlCursor:
        return _JsonlCursor(stream, self.path, self.columns, line)

    def count(self) -> int:
        if self.columns is None:
            return 0
        with _open_binary(self.path, self.gz) as stream:
            stream.seek(self.data_byte)
            return sum(1 for raw in stream if raw.strip())  # every line but a blank one is a row, good or bad

    def _frame(self, rows: list[tuple], errors: dict[int, str]) -> pd.DataFrame:
        columns: dict[str, pa.Array | pd.Series] = {}
        for name, column in zip(self.columns, _transposed(rows, len(self.columns)), strict=True):
            columns[name] = _text_array(column) if name in self.text_columns else _json_column(column)
        columns[ROW_ERROR] = _errors_array(errors, len(rows))
        return _frame(columns)


def _json_column(values: tuple) -> pa.Array | pd.Series:
    """JSON values of an extra column: typed when they are all numbers, all text or all true/false (missing
    ones aside); else, objects and lists included, kept as they are."""
    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pd.Series(values, dtype=object)
    return pd.Series(values, dtype=object) if pa.types.is_nested(array.type) else array

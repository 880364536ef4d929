"""Streaming URL tables (vlalign.data.url_table.UrlTable): every format and sharded list read in chunks equals the
whole table, any chunk reads back from its locator alone, bad rows are kept with their problem, memory stays
bounded by the chunk."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlalign.data.url_table import UrlTable, expand_paths

FORMATS = ["parquet", "csv", "csv.gz", "tsv", "tsv.gz", "jsonl", "jsonl.gz"]
TEXT = ["url", "caption", "uid", "row_error"]


def write(rows: pd.DataFrame, path: Path) -> Path:
    """`rows` in the format its name says; parquet in row groups of 4 rows, so chunks start inside them."""
    name = path.name
    if name.endswith(".parquet"):
        rows.to_parquet(path, row_group_size=4)
    elif ".jsonl" in name:
        rows.to_json(path, orient="records", lines=True)
    else:
        rows.to_csv(path, sep="\t" if ".tsv" in name else ",", index=False)
    return path


def scanned(table: UrlTable, chunk_rows: int) -> pd.DataFrame:
    """All rows by scan, checking on the way that every chunk reads back, from its locator alone, the same."""
    chunks = list(table.scan(chunk_rows))
    for chunk in chunks:
        assert 0 < len(chunk.rows) <= chunk_rows
        locator = json.loads(json.dumps(chunk.locator))  # as a job gets it
        pd.testing.assert_frame_equal(table.read(locator, len(chunk.rows)), chunk.rows)
    assert sum(len(chunk.rows) for chunk in chunks) == table.count_rows()
    return pd.concat([chunk.rows for chunk in chunks], ignore_index=True) if chunks else table.empty()


def expected(rows: pd.DataFrame) -> pd.DataFrame:
    """What reading `rows` gives: url, caption and uid as text with empty ones missing, no row errors."""
    out = rows.copy()
    for col in ("url", "caption", "uid"):
        out[col] = out[col].replace("", None).astype("str")
    out["row_error"] = pd.Series([None] * len(out), dtype="str")
    return out


def assert_same_rows(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Equal text columns (type included) and equal extras' values (their types follow the format)."""
    assert list(got.columns) == list(want.columns)
    text = [col for col in want.columns if col in TEXT]
    pd.testing.assert_frame_equal(got[text], want[text])
    extras = [col for col in want.columns if col not in TEXT]
    pd.testing.assert_frame_equal(got[extras], want[extras], check_dtype=False)


TRICKY = pd.DataFrame({
    "url": [f"http://example.com/{i}.jpg" for i in range(9)] + [""],
    "caption": ["NA", "null", "", "a, comma", 'a "quoted" word', "two\nlines", 'both,\n"and"', "\ttab", " ", "x"],
    "uid": ["0001", "0002", "", "0004", "0005", "0006", "0007", "0008", "0009", "0010"],
    "width": list(range(10)),
})  # fmt: skip


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_reads_in_chunks_as_a_whole(tmp_path, fmt):
    table = UrlTable(str(write(TRICKY, tmp_path / f"urls.{fmt}")), "url", "caption", "uid")
    assert table.extras == ["uid", "width"]
    for chunk_rows in (1, 3, 10, 1000):  # 3: the last chunk is shorter
        assert_same_rows(scanned(table, chunk_rows), expected(TRICKY))
    chunks = list(table.scan(3))
    assert [(chunk.file, chunk.first_row, len(chunk.rows)) for chunk in chunks] == [
        (0, 0, 3), (0, 3, 3), (0, 6, 3), (0, 9, 1)]  # fmt: skip
    assert scanned(table, 3)["width"].dtype == "int64"


def test_locators_name_row_groups_or_byte_offsets(tmp_path):
    parquet = UrlTable(str(write(TRICKY, tmp_path / "a.parquet")), "url", "caption")
    assert [chunk.locator for chunk in parquet.scan(3)] == [
        {"file": 0, "row_group": 0, "offset": 0}, {"file": 0, "row_group": 0, "offset": 3},
        {"file": 0, "row_group": 1, "offset": 2}, {"file": 0, "row_group": 2, "offset": 1}]  # fmt: skip
    path = write(TRICKY, tmp_path / "a.csv")
    data = path.read_bytes()
    for chunk in UrlTable(str(path), "url", "caption").scan(3):
        record = data[chunk.locator["byte"]:].split(b",", 1)[0].decode()
        assert record == TRICKY["url"].iloc[chunk.first_row]
        assert data[:chunk.locator["byte"]].count(b"\n") + 1 == chunk.locator["line"]
        assert chunk.locator["row"] == chunk.first_row


def test_gzip_chunks_read_from_their_offsets(tmp_path):
    rows = pd.DataFrame({"url": [f"u{i}" for i in range(1000)], "caption": [f"line\n{i}" for i in range(1000)]})
    table = UrlTable(str(write(rows, tmp_path / "a.csv.gz")), "url", "caption")
    last = list(table.scan(300))[-1]
    assert (last.first_row, len(last.rows)) == (900, 100)
    with gzip.open(tmp_path / "a.csv.gz", "rb") as stream:  # the offset is into the decompressed text
        stream.seek(last.locator["byte"])
        assert stream.readline() == b'u900,"line\n'
    assert table.read(last.locator, 100)["caption"].tolist() == [f"line\n{i}" for i in range(900, 1000)]


@st.composite
def csv_tables(draw):
    text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
    n = draw(st.integers(0, 25))
    rows = pd.DataFrame({
        "url": draw(st.lists(text, min_size=n, max_size=n)),
        "caption": draw(st.lists(st.sampled_from(['a,b', 'q"q', "\n", "\r\n", "NA", "", " "]) | text,
                                 min_size=n, max_size=n)),
        "uid": [f"{i:05d}" for i in range(n)],
    })  # fmt: skip
    return rows, draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])), draw(st.sampled_from([",", "\t"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=csv_tables(), chunk_rows=st.integers(1, 30))
def test_csv_with_any_quoting_splits_at_record_boundaries(tmp_path, table, chunk_rows):
    rows, quoting, delimiter = table
    path = tmp_path / ("t.tsv" if delimiter == "\t" else "t.csv")
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, quoting=quoting, delimiter=delimiter)  # lines end in \r\n
        writer.writerow(rows.columns)
        writer.writerows(rows.itertuples(index=False))
    got = scanned(UrlTable(str(path), "url", "caption", "uid"), chunk_rows)
    pd.testing.assert_frame_equal(got, expected(rows))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_rows=st.integers(0, 30), chunk_rows=st.integers(1, 12), fmt=st.sampled_from(FORMATS),
       data=st.data())  # fmt: skip
def test_random_tables_round_trip_in_every_format(tmp_path, n_rows, chunk_rows, fmt, data):
    text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=8)
    rows = pd.DataFrame({
        "url": data.draw(st.lists(text, min_size=n_rows, max_size=n_rows)),
        "caption": data.draw(st.lists(text, min_size=n_rows, max_size=n_rows)),
        "uid": data.draw(st.lists(st.from_regex(r"0[0-9]{3}", fullmatch=True), min_size=n_rows, max_size=n_rows)),
        "score": data.draw(st.lists(st.integers(-10**9, 10**9), min_size=n_rows, max_size=n_rows)),
    })  # fmt: skip
    path = write(rows, tmp_path / f"r-{n_rows}-{chunk_rows}.{fmt}")
    want = expected(rows)
    if n_rows == 0 and "jsonl" in fmt:  # no object, so no columns beyond the ones every list has
        want = want[["url", "caption", "row_error"]]
    assert_same_rows(scanned(UrlTable(str(path), "url", "caption", "uid"), chunk_rows), want)


def test_brace_patterns_expand_in_order_and_keep_padding(tmp_path):
    for name in ["part-008.csv", "part-009.csv", "part-010.csv", "a.csv", "b1.csv", "b2.csv", "x-a-1.csv",
                 "x-a-2.csv", "x-b-1.csv", "x-b-2.csv"]:  # fmt: skip
        (tmp_path / name).write_text("url,caption\n")
    assert [p.name for p in expand_paths(f"{tmp_path}/part-{{008..010}}.csv")] == [
        "part-008.csv", "part-009.csv", "part-010.csv"]  # fmt: skip
    assert [p.name for p in expand_paths(f"{tmp_path}/{{a,b{{1,2}}}}.csv")] == ["a.csv", "b1.csv", "b2.csv"]
    assert [p.name for p in expand_paths(f"{tmp_path}/x-{{a,b}}-{{1..2}}.csv")] == [
        "x-a-1.csv", "x-a-2.csv", "x-b-1.csv", "x-b-2.csv"]  # fmt: skip
    assert expand_paths(f"{tmp_path}/a.csv") == [tmp_path / "a.csv"]
    assert [p.name for p in expand_paths(f"{tmp_path}/{{x-*-2,b?}}.csv")] == ["x-a-2.csv", "x-b-2.csv", "b1.csv",
                                                                           "b2.csv"]  # fmt: skip
    with pytest.raises(FileNotFoundError, match=r"z\*\.csv matches no file"):
        expand_paths(f"{tmp_path}/z*.csv")


def test_missing_shards_are_named_and_counted(tmp_path):
    (tmp_path / "part-00.csv").write_text("url,caption\n")
    with pytest.raises(FileNotFoundError, match=r"2 of its 3 files .*part-01\.csv, .*part-02\.csv$"):
        expand_paths(f"{tmp_path}/part-{{00..02}}.csv")
    with pytest.raises(FileNotFoundError, match=r"19 of its 20 files .*part-05\.csv and 14 more"):
        expand_paths(f"{tmp_path}/part-{{00..19}}.csv")
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        UrlTable(str(tmp_path / "nothing.csv"), "url", "caption")


def test_shards_of_different_sizes_and_formats_chunk_per_file(tmp_path):
    shards = [TRICKY.iloc[:5], TRICKY.iloc[:0], TRICKY.iloc[5:], TRICKY.iloc[2:4][["width", "uid", "caption", "url"]]]
    for index, (rows, fmt) in enumerate(zip(shards, ["csv", "csv", "jsonl.gz", "parquet"], strict=True)):
        write(rows, tmp_path / f"s{index}.{fmt}")
    table = UrlTable(f"{tmp_path}/{{s0.csv,s1.csv,s2.jsonl.gz,s3.parquet}}", "url", "caption", "uid")
    assert [p.name for p in table.files] == ["s0.csv", "s1.csv", "s2.jsonl.gz", "s3.parquet"]
    assert table.extras == ["uid", "width"]  # in the first file's order
    chunks = list(table.scan(3))
    assert [(chunk.file, chunk.first_row, len(chunk.rows)) for chunk in chunks] == [
        (0, 0, 3), (0, 3, 2), (2, 0, 3), (2, 3, 2), (3, 0, 2)]  # fmt: skip
    all_rows = pd.concat([TRICKY.iloc[:5], TRICKY.iloc[5:], TRICKY.iloc[2:4]], ignore_index=True)
    assert_same_rows(scanned(table, 3), expected(all_rows))
    assert table.count_rows() == 12


def test_tables_that_cannot_be_lists_are_refused_with_their_columns(tmp_path):
    write(TRICKY, tmp_path / "a.csv")
    write(TRICKY.drop(columns="width"), tmp_path / "b.csv")
    with pytest.raises(ValueError, match=r"b\.csv: columns \['url', 'caption', 'uid'\] differ from those of .*a\.csv"):
        UrlTable(f"{tmp_path}/{{a,b}}.csv", "url", "caption")
    with pytest.raises(ValueError, match=r"a\.csv: no column \['link'\] \(columns: \['url', 'caption', 'uid', "
                                         r"'width'\]\); set url_col"):  # fmt: skip
        UrlTable(str(tmp_path / "a.csv"), "link", "caption")
    with pytest.raises(ValueError, match=r"extra columns \['url'\] would shadow"):
        UrlTable(str(tmp_path / "a.csv"), "uid", "caption")
    write(TRICKY.rename(columns={"width": "row_error"}), tmp_path / "c.jsonl")
    with pytest.raises(ValueError, match=r"extra columns \['row_error'\] would shadow"):
        UrlTable(str(tmp_path / "c.jsonl"), "url", "caption")
    (tmp_path / "d.json").write_text("[]")
    with pytest.raises(ValueError, match=r"d\.json: a URL list must be \.parquet, \.csv"):
        UrlTable(str(tmp_path / "d.json"), "url", "caption")
    (tmp_path / "e.csv").write_text("url,caption,url\n")
    with pytest.raises(ValueError, match="names a column twice"):
        UrlTable(str(tmp_path / "e.csv"), "url", "caption")
    (tmp_path / "f.jsonl").write_text("[1]\nnot json\n")
    with pytest.raises(ValueError, match="none of its 2 lines is a JSON object"):
        UrlTable(str(tmp_path / "f.jsonl"), "url", "caption")


def test_empty_text_files_are_shards_without_rows(tmp_path):
    (tmp_path / "a.csv").write_text("")
    (tmp_path / "b.jsonl").write_text("\n\n")
    write(TRICKY.iloc[:2], tmp_path / "c.csv")
    table = UrlTable(f"{tmp_path}/{{a.csv,b.jsonl,c.csv}}", "url", "caption")
    assert [chunk.file for chunk in table.scan(10)] == [2]
    assert table.count_rows() == 2
    assert list(UrlTable(str(tmp_path / "a.csv"), "url", "caption").empty().columns) == ["url", "caption",
                                                                                         "row_error"]  # fmt: skip


def test_byte_order_marks_and_crlf_line_ends_are_read_through(tmp_path):
    bom = "\ufeff".encode()
    (tmp_path / "a.csv").write_bytes(bom + b"url,caption\r\nhttp://a,one\r\nhttp://b,\"two\r\nlines\"\r\n")
    (tmp_path / "b.jsonl").write_bytes(bom + b'{"url": "http://c", "caption": "three"}\r\n')
    rows = scanned(UrlTable(f"{tmp_path}/{{a.csv,b.jsonl}}", "url", "caption"), 1)
    assert rows["caption"].tolist() == ["one", "two\r\nlines", "three"] and rows["row_error"].isna().all()


def test_bad_csv_records_become_rows_with_their_problem(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"url,caption,n\n"
                     b"http://a,one,1\n"
                     b"http://b,too,many,fields\n"
                     b"http://c\n"
                     b"\n"
                     b'http://d,"two\nlines",4\n'
                     b"http://e,\xff\xfe not utf-8,5\n"
                     b"http://f,six,6\n"
                     b'http://g,"never closed,7\n'
                     b"http://h,eight,8\n")  # fmt: skip
    table = UrlTable(str(path), "url", "caption")
    for chunk_rows in (1, 2, 3, 100):
        rows = scanned(table, chunk_rows)
        assert rows["url"].fillna("-").tolist() == ["http://a", "-", "-", "http://d", "-", "http://f", "-"]
        errors = rows["row_error"].tolist()
        assert pd.isna(errors[0]) and pd.isna(errors[3]) and pd.isna(errors[5])
        assert errors[1] == f"{path} line 3: 4 fields where the header has 3: ['http://b', 'too', 'many', 'fields']"
        assert errors[2] == f"{path} line 4: 1 fields where the header has 3: ['http://c']"
        assert errors[4].startswith(f"{path} line 8: not UTF-8 (invalid start byte): b'http://e,\\xff\\xfe")
        # An unclosed quote swallows the rest of the file into one record, which then has too few fields.
        assert errors[6].startswith(f"{path} lines 10-11: 2 fields where the header has 3")
        assert len(rows) == 7 and rows.loc[3, "caption"] == "two\nlines"
        assert rows[["caption", "n"]].iloc[[1, 2, 4, 6]].isna().all().all()


def test_bad_jsonl_lines_become_rows_with_their_problem(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"url": "u1", "caption": "c1", "n": 1}\n'
                     b"\n"
                     b"[1, 2]\n"
                     b'{"url": "u2", "caption": "c2", "n": 2, "other": 0}\n'
                     b"not json\n"
                     b'{"url": 3, "n": null}\n'
                     b'  {"url": "u4", "caption": "", "n": 4}  \n'
                     b"\xff\n"
                     b'{"url": "u5", "caption": "c5", "n": 5} trailing\n'
                     b"null\n"
                     + b"[" * 100_000 + b"\n"
                     b'{"url": "u6", "caption": "c6", "n": 6}')  # fmt: skip
    table = UrlTable(str(path), "url", "caption")
    for chunk_rows in (1, 4, 100):
        rows = scanned(table, chunk_rows)
        assert rows["url"].fillna("-").tolist() == ["u1", "-", "-", "-", "3", "u4", "-", "-", "-", "-", "u6"]
        assert rows["caption"].fillna("-").tolist() == ["c1"] + ["-"] * 9 + ["c6"]
        errors = rows["row_error"].fillna("").tolist()
        assert errors[0] == errors[4] == errors[5] == errors[10] == ""
        assert errors[1] == f"{path} line 3: an array where a JSON object was expected: [1, 2]"
        assert errors[2].startswith(f"{path} line 4: keys ['other'] that the file's first object has not")
        assert errors[3].startswith(f"{path} line 5: not valid JSON (Expecting value")
        assert errors[6].startswith(f"{path} line 8: not valid JSON ('utf-8' codec can't decode byte 0xff")
        assert errors[7].startswith(f"{path} line 9: not valid JSON (more after the JSON value at column 39)")
        assert errors[8] == f"{path} line 10: null where a JSON object was expected: null"
        assert errors[9].startswith(f"{path} line 11: not valid JSON (maximum recursion depth")
    assert scanned(table, 1)["n"].tolist()[:2] == [1, None]  # a chunk of one row: typed from that row


def test_a_uid_of_digits_keeps_its_leading_zeros_in_every_format(tmp_path):
    rows = pd.DataFrame({"url": ["http://a", "http://b"], "caption": ["a", "b"], "uid": ["007", "0000123"]})
    for fmt in FORMATS:
        table = UrlTable(str(write(rows, tmp_path / f"u.{fmt}")), "url", "caption", key_col="uid")
        assert scanned(table, 1)["uid"].tolist() == ["007", "0000123"], fmt
    # Without key_col the column is an extra, typed like any other (as before).
    assert scanned(UrlTable(str(tmp_path / "u.csv"), "url", "caption"), 5)["uid"].tolist() == [7, 123]


MEMORY_PROBE = textwrap.dedent("""
    import sys
    from vlalign.data.url_table import UrlTable

    def peak_rss_mib():  # VmHWM, unlike ru_maxrss, starts afresh at exec: the parent's size does not count
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024

    table = UrlTable(sys.argv[1], "url", "caption", "uid")
    for _ in table.scan(500):  # warm up: imports, caches, allocator pools
        break
    try:  # start the peak again from here (Linux >= 4.0); else it counts from the imports' peak, no less strict
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass
    before = peak_rss_mib()
    rows = sum(len(chunk.rows) for chunk in table.scan(500))
    print(rows, peak_rss_mib() - before)
""")


@pytest.mark.timeout(60)
def test_memory_stays_bounded_by_the_chunk_not_the_file(tmp_path):
    n = 150_000
    caption = "a caption long enough to make the list weigh something, with a comma"
    lines = {
        "big.csv": ["uid,url,caption,n\n"] + [f'{i:09d},http://example.com/{i}.jpg,"{caption}",{i}\n'
                                             for i in range(n)],
        "big.jsonl": [json.dumps({"uid": f"{i:09d}", "url": f"http://example.com/{i}.jpg", "caption": caption,
                                  "n": i}) + "\n" for i in range(n)],
    }  # fmt: skip
    probes = {}
    for name, text in lines.items():
        (tmp_path / name).write_text("".join(text))
        probes[name] = subprocess.Popen([sys.executable, "-c", MEMORY_PROBE, str(tmp_path / name)],
                                        stdout=subprocess.PIPE, text=True)  # fmt: skip
    for name, probe in probes.items():
        out, _ = probe.communicate(timeout=50)
        rows, growth_mib = out.split()
        size_mib = (tmp_path / name).stat().st_size / 2**20
        assert int(rows) == n
        # The file is ~20 MiB and its rows as a table several times that; 500-row chunks need well under 10 MiB.
        assert float(growth_mib) < min(10, size_mib / 3), (name, growth_mib, size_mib)

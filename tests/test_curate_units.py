"""Building blocks of curation: caption heuristics, concept matching, pHash distances, the worker map."""

import numpy as np
import pandas as pd
import pytest

from vlalign.curate.captions import boilerplate_match, content_words, measure_captions
from vlalign.schema import default

DEFAULT_BOILERPLATE = default("curate.measure.boilerplate")
from vlalign.curate.concepts import load_entries, match_concepts
from vlalign.curate.dedup import greedy_duplicates, hamming, phash_codes
from vlalign.curate.hamming_index import nearest_within
from vlalign.curate.ocr import caption_overlap
from vlalign.parallel import process_map


@pytest.mark.parametrize("caption, expected", [
    ("IMG_1234.jpg", "file_name"), ("DSC00012", "file_name"), ("holiday photo.JPEG", "file_name"),
    ("Image may contain: a dog", "image may contain"), ("Stock-photo of a cat", "stock photo"),
    ("A dog on a sofa.", None), ("an image of images", None), ("a photo of 3 dogs", None),
])  # fmt: skip
def test_boilerplate_matches_stock_phrases_and_file_names(caption, expected):
    assert boilerplate_match(caption, DEFAULT_BOILERPLATE) == expected


def test_caption_measurements_count_words_content_words_urls_and_replacement_characters():
    m = measure_captions(pd.Series(["The red bus and the red car.", "see https://x.org/a.png", "caf\ufffd", None]),
                         DEFAULT_BOILERPLATE)  # fmt: skip
    assert m["n_words"].tolist() == [7, 2, 1, 0] and m["n_chars"].tolist() == [28, 23, 4, 0]
    assert m["complexity"].tolist() == [3, 4, 1, 0]  # red, bus, car / see, https, org, png / caf
    assert m["url_like"].tolist() == [False, True, False, False]
    assert m["non_utf8"].tolist() == [False, False, True, False]
    assert content_words("A big, BIG dog 42") == {"big", "dog"}


def test_caption_overlap_is_the_share_of_caption_words_written_in_the_image():
    assert caption_overlap("Summer sale poster", "SUMMER SALE -50%") == pytest.approx(2 / 3)
    assert caption_overlap("the", "THE END") == 1.0  # only stop words: all words count
    assert caption_overlap("", "anything") == 0.0


def test_concepts_match_whole_words_plurals_and_multi_word_entries(tmp_path):
    entries_file = tmp_path / "entries.txt"
    entries_file.write_text("# a comment\ncat\nbus\nankle boot  # trailing comment\nT-Shirt\n\n")
    entries = load_entries(entries_file)
    assert entries == ["cat", "bus", "ankle boot", "t shirt"]
    found = match_concepts(pd.Series(["Two cats and buses", "education", "Ankle boots", "a t-shirt", None]), entries)
    assert found.tolist() == [["bus", "cat"], [], ["ankle boot"], ["t shirt"], []]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no concept entries"):
        load_entries(tmp_path / "empty.txt")


def test_the_shipped_entries_hold_the_eval_class_names():
    entries = set(load_entries())
    assert {"t shirt", "ankle boot", "sneaker", "vehicles", "naturalforces", "natural forces"} <= entries
    assert len(entries) > 300


def test_hamming_distances_and_nearest_codes():
    codes, valid = phash_codes(pd.Series(["0000000000000000", "00000000000000ff", None, "ffffffffffffffff"]))
    assert valid.tolist() == [True, True, False, True]
    assert hamming(codes[:2], codes[3:]).tolist() == [[64], [56]]
    distance, index = nearest_within(codes[valid], codes[valid], 64, exclude_same_index=True)
    assert distance.tolist() == [8, 8, 56] and index.tolist() == [1, 0, 1]


def test_greedy_duplicates_compare_with_kept_samples_only():
    sha = pd.Series(["a", "b", "c", "a"], index=[10, 11, 12, 13])
    phash = pd.Series(["0000000000000000", "0000000000000007", "000000000000003f", "0000000000000000"], index=sha.index)
    found = greedy_duplicates(sha, phash, max_hamming=4)
    # 11 is near 10; 12 is near 11 only, which was dropped, so 12 stays; 13 repeats 10's bytes.
    assert found["of"].tolist() == [None, 10, None, 10] and found["kind"].tolist() == [None, "near", None, "exact"]
    assert greedy_duplicates(sha, phash, near=False)["of"].tolist() == [None, None, None, 10]


def test_process_map_keeps_order_and_reads_ahead_only_a_few_batches():
    consumed = []

    def batches():
        for i in range(12):
            consumed.append(i)
            yield list(range(i))

    results = process_map(len, batches(), workers=2)
    assert next(results) == 0 and len(consumed) <= 5  # 2 * workers in flight, then one more
    assert list(results) == list(range(1, 12))
    assert list(process_map(len, iter([[1, 2], [3]]), workers=1)) == [2, 1]


def test_undecodable_inputs_never_raise_from_measure_image():
    from vlalign.curate.images import measure_image

    row = measure_image(b"GIF89a truncated", ocr_max_side=640)
    assert not row["decode_ok"] and row["decode_error"] and row["phash"] is None and "ocr_text" not in row
    assert np.isnan(float(row["width"] if row["width"] is not None else np.nan))

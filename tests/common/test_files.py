"""Resumable jobs' JSON-lines logs read back after a kill: a torn last line is skipped, not fatal."""

import json

from triscale.common.files import read_jsonl, read_jsonl_by


def test_read_jsonl_by_skips_a_line_cut_by_a_kill(tmp_path):
    path = tmp_path / "labels.jsonl"
    assert read_jsonl_by(path, "index") == {}
    path.write_text(
        json.dumps({"index": 4, "energy": -1.5}) + "\n" + json.dumps({"index": 1, "energy": 2.0}) + '\n{"index": 7, "en'
    )
    assert read_jsonl_by(path, "index") == {4: {"index": 4, "energy": -1.5}, 1: {"index": 1, "energy": 2.0}}


def test_read_jsonl_keeps_order_and_the_lines_after_a_torn_one(tmp_path):
    """A run killed mid-write leaves a torn line; the resumed run appends after it. Its labels are kept."""
    path = tmp_path / "labels.jsonl"
    assert read_jsonl(path) == []
    path.write_text('{"index": 2, "value": 0.5}\n{"index": 9, "va\n{"index": 9, "value": 1.5}\n')
    assert read_jsonl(path) == [{"index": 2, "value": 0.5}, {"index": 9, "value": 1.5}]

from __future__ import annotations

from fusion_dspy.evaluate.journal import Journal


def test_journal_round_trip(tmp_path):
    journal = Journal(tmp_path / "sub" / "j.jsonl")
    journal.append({"a": 1})
    journal.append({"b": "ü"})
    assert list(Journal(journal.path)) == [{"a": 1}, {"b": "ü"}]


def test_torn_last_line_is_cut_before_the_next_append(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"a": 1}\n{"b": 2')  # a kill in the middle of the second write
    journal = Journal(path)
    assert journal.repaired_bytes == len('{"b": 2')
    journal.append({"c": 3})
    assert list(journal) == [{"a": 1}, {"c": 3}]  # the good entry was not glued to the fragment
    assert path.read_text() == '{"a": 1}\n{"c": 3}\n'


def test_a_file_with_only_a_fragment_is_emptied(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"partial": ')
    assert list(Journal(path)) == [] and path.read_text() == ""

from __future__ import annotations

import pytest
from fusion_dspy.programs.data import check_limit
from fusion_dspy.programs.data import load_rows


@pytest.mark.parametrize("limit", [-1, 2.5, True, "3"])
def test_check_limit_refuses_what_is_not_a_row_count(limit):
    with pytest.raises(ValueError, match="limit"):
        check_limit(limit)


@pytest.mark.parametrize("limit", [None, 0, 3])
def test_check_limit_keeps_row_counts(limit):
    assert check_limit(limit) == limit


def test_load_rows_of_an_empty_file_list_names_the_argument():
    # Was an IndexError from files[0].
    with pytest.raises(ValueError, match="data_files"):
        load_rows([])

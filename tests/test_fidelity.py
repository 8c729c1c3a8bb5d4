"""The fidelity table finds every row's code in the kit, and the written file is what the code makes."""
import dataclasses

import pytest

from tcm_kit import fidelity


def test_every_row_finds_its_kit_line():
    for row in fidelity.ROWS:
        n = fidelity.kit_line(row)
        line = (fidelity.REPO_ROOT / row.kit_file).read_text().splitlines()[n - 1]
        assert row.kit_anchor in line
        assert row.status in ("same", "option", "different") and (row.status == "same" or row.why)
    assert {r.item for r in fidelity.ROWS} >= {"1", "2", "3", "4", "5"}


def test_a_row_whose_code_is_gone_is_an_error():
    row = dataclasses.replace(fidelity.ROWS[0], kit_anchor="def no_such_function(")
    with pytest.raises(fidelity.FidelityError, match="no_such_function"):
        fidelity.kit_line(row)


def test_the_committed_table_is_up_to_date():
    committed = (fidelity.REPO_ROOT / "reports" / "fidelity.md").read_text()
    assert committed == fidelity.table_markdown(), "run: python -m tcm_kit.fidelity"

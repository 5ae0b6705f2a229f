"""`SummaryTable`: a ``pandas.DataFrame`` that prints every column.

Kept apart from the public modules so that the API reference does not document the members it
inherits from pandas.
"""

from __future__ import annotations

import pandas as pd


class SummaryTable(pd.DataFrame):
    """A ``pandas.DataFrame`` whose printed form shows every column.

    pandas elides the middle columns of a table wider than the terminal (``...``), which would
    hide the peak t of a lesion summary; ``print(table)`` shows them all.
    """

    @property
    def _constructor(self) -> type[SummaryTable]:
        return SummaryTable

    def __repr__(self) -> str:
        return self.to_string(index=False)

"""A token provider whose import leaves a mark: a refused block must import nothing.

Importing this module writes ``imported`` to the file ``$TT_IMPORT_PROBE`` names.
"""

from __future__ import annotations

import os
from pathlib import Path

if os.environ.get("TT_IMPORT_PROBE"):
    Path(os.environ["TT_IMPORT_PROBE"]).write_text("imported")

#: The token it gives: the tests look for it in what reached the server.
TOKEN = "tt-probe-token-" + os.urandom(8).hex()


def token() -> str:
    """The probe's token."""
    return TOKEN

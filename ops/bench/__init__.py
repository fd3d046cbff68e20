"""The archiver's benchmark (`make bench`): private servers, five scenarios, JSON + a table.

Every scenario runs its reference (floor, naive design) in the same process run and on the
same data, so that its ratio holds on a noisy shared machine. Run `python -m ops.bench -h`.
"""

from __future__ import annotations

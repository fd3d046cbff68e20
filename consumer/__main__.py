"""`python -m consumer` is `archiver`."""

from __future__ import annotations

from consumer.cli.main import main

main(prog_name="archiver")

"""The `archiver` entry point: the command group with every capability's commands on it."""

from __future__ import annotations

from consumer.cli import api, app, archiving, browse, checks, cold, erasing, lifecycle
from consumer.demo import command as demo

# Importing a command module registers its commands on app.main; these names keep them used.
CAPABILITIES = (archiving, checks, browse, lifecycle, api, cold, erasing)
app.main.add_command(demo.command)
main = app.main

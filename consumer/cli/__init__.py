"""The `archiver` command line: consumer/cli/app.py holds the group and what commands share,
one module per capability holds its commands (archiving, checks, browse, lifecycle), and
consumer/cli/main.py puts them together (the `archiver` entry point).

How a command is written (follow this for every new one; tests/unit/test_cli_conventions.py
and tests/acceptance/test_cli_terminal.py check it):

    @app.main.command("thing")                       # a commands.Command: one error handler
    @options.json_option                             # prints data? then --json (as `out`)
    @options.page_options(default=20)                # a list? --limit N, --after CURSOR
    @options.time_option("--since", "Only since.")   # takes a time? ISO 8601 or 1h/7d ago...
    @options.tz_option                               # ...and --tz for zone-less input
    @options.settings_options("thing")               # settings: add "thing" to the commands
    def thing_command(out: terminal.Output, limit, cursor, since, **values) -> ExitCode | None:
        s = app.load_settings(values)                # validated settings, logging configured
        page = app.run_db(s, lambda conn: things.page(conn, limit, cursor))
        out.items(page.rows, things.COLUMNS, page.next_cursor)

* Where: a capability's commands live in their own module of this package (a new capability,
  a new module, imported by consumer/cli/main.py); what they compute lives outside it.
* Settings: a field in consumer/settings.py with `commands` naming the command becomes its
  flag and ARCHIVER_* variable, typed and validated there; the README's tables list it.
* Errors: raise; never print a traceback or call sys.exit. `exceptions.UsageError` and
  ConfigError exit 2, `NotFoundError` and other ArchiverErrors 1, connection failures 3 (wrap
  the code in `exits.reaching_postgres(url)` / `exits.reaching_redis(url)` so the message names
  the URL to check; `run_db` does it). Return an ExitCode for "done, but failed" (exit 1).
* Output: stored strings only through `terminal` (`Output.items`, `.document`, `.summary`,
  `terminal.visible`); a list's JSON is {"items": [...], "next": cursor}; times via `times`.
* Sub-commands (`dead-letters replay`): repeat the group's options they take, so that they may
  be given after the sub-command too, and read them with `options.inherit(ctx)`.
* An option with its own ARCHIVER_* variable declares it (`envvar=`): the check for misspelt
  variables knows every variable some option or setting reads.
* Docs: a row in the README's command table (tests/unit/test_docs_tables.py compares it with
  the command's flags), and the fields of its --json in the README's JSON table.
"""

"""`archiver demo` and the tooling around it: private Redis and PostgreSQL servers (`embedded`,
also started by the tests, `make bench` and `make faults`), the demo's own servers kept under
.archiver/ (`sandbox`), simulated agents (`workload`) and the live view (`display`)."""

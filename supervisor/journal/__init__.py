"""The SQLite journal, the run's durable record: `writer` (an event-bus client that
commits every event), `reader` (read-only views for status, history and the TUI),
`schema` (tables and migrations), `settle` (what a crashed run left: settle, load,
reopen), `resume` (the state a resumed loop starts from), `snapshot` (the one status
shape from a journal) and `statelock` (one supervisor per state dir)."""

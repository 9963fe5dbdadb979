"""loops.toml to a frozen `spec.Config`: `load` ties the readers together, and the
`_private` modules read the typed values (`_schema`), their positions in the source
(`_tomlpos`), the agent and loop tables (`_agent_tables`, `_loops`) and
`$placeholders`. Every error is reported as FILE:LINE:COL; nothing here runs anything.
`rules` holds what a valid prompt template, max_iterations and budget limit are, for
loops.toml and for edits alike."""

"""The composition root: the command line (`main`), the commands that talk to a served
supervisor (`remote`), and the only place where the headless core and the Textual UI
meet (the UI is imported inside the commands that open it, so a headless run never
loads textual)."""

"""loopvisor's Textual operator console (imported only when a terminal UI is wanted)."""

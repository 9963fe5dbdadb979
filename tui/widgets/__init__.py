"""Widgets of the console: the loops table, the transcript view, the budget gauges."""

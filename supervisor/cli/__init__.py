"""The composition root: the command line (`main`), the commands that talk to a served
supervisor (`remote`), and the only place where the headless core and the Textual UI
meet (the UI is imported inside the commands that open it, so a headless run never
loads textual).

Importing it tunes the process's garbage collector, before the rest of loopvisor is
imported (`loopvisor` and `python -m supervisor` both import this package first): the
start-up builds a hundred dataclasses and a run allocates many short-lived objects
(events, chunks) beside a large steady set (the config, a state machine per loop).
With the default first threshold (700 allocations) the collector ran through all of
them over and over: ~10 ms of a run's ~150 ms start-up, and 5-10% of the CPU of 1,000
sim loops (benchmarks/scale.py). Cyclic garbage waits for 10,000 allocations instead.

It also installs `codecache`: the methods of those dataclasses are compiled once and
kept beside the bytecode, not compiled again at every start (a third of `run`'s
import time on Python 3.11).
"""

import gc

from supervisor.cli import codecache

gc.set_threshold(10_000, 10, 10)
codecache.install()

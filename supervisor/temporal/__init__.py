"""loopvisor on Temporal (`pip install 'loopvisor[temporal]'`): loops as workflows,
workers on many hosts, one leased budget (docs/temporal.md).

Only this package imports `temporalio` (an import-linter contract), and nothing
outside the command line imports this package, so a plain install never needs it.
"""

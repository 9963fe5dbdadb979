"""One module per agent kind, each exporting `KIND` (`supervisor.agents.kind.AgentKind`).

A declaration module holds the kind's spec dataclass, its table reader and its
abilities, and imports its implementation only inside `build`: config imports them
all, a run loads only the implementations its loops use. `supervisor.agents.registry`
lists them.
"""

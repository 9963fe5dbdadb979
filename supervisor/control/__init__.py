"""The control socket: `ops` (every operation defined once: args, handler, result,
docs row; `opdef` says what a definition holds), `protocol` (framing, validation,
errors; docs/protocol.md), `server` (serves a `SupervisorHandle` on a private Unix
socket; `connection` serves one client, `bounds` keeps a response line bounded),
`client` (`RemoteSupervisor`, the same handle over the socket, for `attach`, `ctl`
and the TUI) and `serve` (the long-lived supervisor behind `loopvisor serve`)."""

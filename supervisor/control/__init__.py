"""The control socket: `protocol` (framing, validation, errors; docs/protocol.md),
`server` (serves a `SupervisorHandle` on a private Unix socket), `client`
(`RemoteSupervisor`, the same handle over the socket, for `attach`, `ctl` and the TUI)
and `serve` (the long-lived supervisor behind `loopvisor serve`)."""

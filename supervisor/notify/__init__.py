"""Notifications: a client of the core that tells a person who is not watching.

`notifier.Notifier` is a bus sink (like the journal): it turns events into alerts
(`supervisor.alerts`), queues them without blocking the loop that published them,
gathers a burst into one message (`message`) and delivers it through the channels
of `[notify]` (`channels`: desktop, webhook, command) with retries and backoff.
"""

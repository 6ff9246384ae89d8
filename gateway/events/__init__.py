"""The event bus: outbox relay, subscribers, retries with backoff, dead letters, webhooks.

Import the component from ``gateway.events.component`` (this package's config is imported by
the settings module, so this file stays free of imports).
"""

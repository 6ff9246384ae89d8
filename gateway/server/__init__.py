"""Serving the gateway: connection limits at the HTTP protocol layer, worker processes and
their bounded shutdown (``trellis run``)."""

"""Keys the request envelope puts in the ASGI scope for the policies inside it.

In a module of their own so a policy can read them without importing the envelope (and all
it imports).
"""

from __future__ import annotations

RESPONSE_STATUS_KEY = "trellis.response_status"
"""A one-item list: the status of the response once it started, else 0. The error handlers
read it to know whether an answer can still be sent, without wrapping ``send`` once more."""

RESPONSE_HEADERS_KEY = "trellis.response_headers"
"""A list of headers the policies inside add to the response (the rate limit's), which the
envelope appends to the response's own, so they need no ``send`` wrapper each."""

CLAIMED_CLIENT_KEY = "trellis.claimed_client_id"
"""The client id a request to the OAuth endpoints claims (authenticated or not), written by the
endpoints and read by the access log, so failed guesses can be traced to who they claimed to be
and where they came from. Bounded in length: it is the caller's text."""

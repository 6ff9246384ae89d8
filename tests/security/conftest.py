"""The security tests reuse the OAuth suite's small served app and its clients."""

from tests.oauth.conftest import clients, run_gateway  # noqa: F401  (fixtures)

"""Process APIs: business operations composed from the system APIs (one module per domain)."""

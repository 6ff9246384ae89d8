"""The declarative ``rest`` connector: a JSON REST API described in ``backends.yaml`` alone
(resources, paging, field mapping to named output models), with a sandbox serving a fixture."""

"""The operator console at ``/console``: integration health and actions in a browser.

Server-rendered pages (Jinja2) with a little static JavaScript, for principals holding the
``admin`` scope: ``auth`` (sign-in, session cookie, CSRF), ``sources`` (what the pages show,
read from the same objects ``/metrics`` and the admin API use), ``history`` (time series),
``spans`` (recent-span ring), ``settings_view`` (effective configuration), ``routes``.
"""

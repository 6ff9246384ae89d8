"""The HTTP helpers every view of the upper layers uses, re-exported for the experience layer.

Experience APIs may not import ``system_apis`` (an import-linter contract), yet they must render
and validate exactly as the other layers do: one copy of each helper, served from here.
"""

from __future__ import annotations

from system_apis.http.common import (
    MAX_PAGE_SIZE,
    InvalidInput,
    json_response,
    location,
    parse_as,
    query_int,
    read_json,
    read_model,
    validation_errors,
)
from system_apis.http.operation import PAGE_QUERY, HeaderParam, QueryParam, operation, page_query

__all__ = [
    "MAX_PAGE_SIZE",
    "PAGE_QUERY",
    "HeaderParam",
    "InvalidInput",
    "QueryParam",
    "json_response",
    "location",
    "operation",
    "page_query",
    "parse_as",
    "query_int",
    "read_json",
    "read_model",
    "validation_errors",
]

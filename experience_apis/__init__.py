"""Experience APIs: one module per channel (web, mobile, support, partner), shaped for it."""

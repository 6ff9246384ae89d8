"""Shared state of the gateway: embedded (SQLite / memory) by default, Redis when scaled out."""

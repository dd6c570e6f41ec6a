"""Rendering: tables, plots and text. Only the app and CLI layers import it."""

"""Figures and reports: pure functions of result objects (no toolkit, no widgets)."""

"""Operator support: the probed matrix, static checks and the compile table."""

"""Analyses: a post submitted once, its stages run as RQ jobs, its record kept in the database."""

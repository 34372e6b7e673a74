"""Instructor tooling for the problem sets: release them and grade submissions with nbgrader."""

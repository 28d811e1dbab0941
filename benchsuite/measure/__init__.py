"""Measurements of a model: each a small typed record with its unit and how it was taken."""

"""Quantised building blocks: group-wise weight-only layers and torch.ao helpers.

The compressors in ``benchsuite.compressors`` choose and configure these; this package
holds only the numerics and module surgery, each testable on its own.
"""

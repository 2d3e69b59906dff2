"""Data: dataset definitions, format readers, image I/O, transforms, Lightning data module."""

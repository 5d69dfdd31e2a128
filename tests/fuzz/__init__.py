"""Coverage-guided fuzz targets for the parsers that read untrusted bytes (see docs/fuzzing.md)."""

"""L7 protocol parsers used by stream reassembly."""

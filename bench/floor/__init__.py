"""Empty and filter-only BPF programs on our hooks: the floor the collector is measured against."""

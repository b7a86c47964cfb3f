"""eBPF probes: BPF C sources, their loaders and pure decoders. The only package that imports bcc."""

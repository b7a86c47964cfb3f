"""eBPF probes: BPF C sources, loaders and pure decoders. The only package importing bcc."""

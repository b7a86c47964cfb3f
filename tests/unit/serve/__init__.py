"""Unit tests of collector/serve/."""

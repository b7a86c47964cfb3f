"""Unit tests of collector/access/."""

"""Unit tests of collector/store/."""

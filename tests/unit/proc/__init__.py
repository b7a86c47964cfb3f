"""Unit tests of collector/proc/."""

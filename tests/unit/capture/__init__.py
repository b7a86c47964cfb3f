"""Unit tests of collector/capture/."""

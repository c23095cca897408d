"""Small utilities shared by every host feature."""

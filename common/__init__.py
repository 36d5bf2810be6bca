"""Pieces shared by every layer: the error family and backend URL handling."""

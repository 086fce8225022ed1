"""Video object tracking."""

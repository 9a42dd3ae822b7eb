"""reka-sync: keep folders of videos in sync with the Reka Vision API."""

__version__ = "0.1.0"

"""pihub: a lean single-process automation daemon for the Raspberry Pi."""

__version__ = "0.1.0"

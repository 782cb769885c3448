"""Clio Manage support beyond the source connector itself: ``fake`` serves a Clio Manage API v4 on loopback."""

"""Trackops support beyond the source connector itself: ``fake`` serves a Trackops API on loopback."""

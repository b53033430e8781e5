"""Customers: profiles, consent per purpose and channel, and the 360 view."""

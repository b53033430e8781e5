"""Offers: templates, issue once, deliver through an outbox, redeem once, expire; holdouts and the conversion report."""

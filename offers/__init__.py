"""Offers: templates, eligibility, coupons, contact policy and the delivery outbox."""

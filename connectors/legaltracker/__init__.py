"""Legal Tracker support beyond the destination client itself.

``connectors.legaltracker.fake`` is a fake Legal Tracker portal (token endpoint, eFiles upload, Billing API invoices
with guideline adjustments and fault injection) that runs on loopback. The demo submits to it, and the tests use it
to prove that the client in ``connectors.destinations.legaltracker`` never submits an invoice twice.
"""

"""Where invoices go: a directory drop, or an e-billing portal's API."""

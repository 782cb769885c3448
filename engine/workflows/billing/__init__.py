"""Billing: invoices built from the entries ready to bill (``invoices``), where they go (``destinations``),
submitting them exactly once and polling the portal (``submission``), the portal's rejections back in the
review queue (``rejections``) with a proposal for the rule that would have caught each (``proposals``)."""

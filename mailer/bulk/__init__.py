"""Bulk sending: recipients files, send_messages, reports, the journal, resume."""

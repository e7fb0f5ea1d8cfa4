"""The SMTP test server: aiosmtpd in the test's loop (or a thread), with faults."""

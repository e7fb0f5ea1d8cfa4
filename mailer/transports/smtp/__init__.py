"""The SMTP transport: a pool of pipelining connections over aiosmtplib."""

"""The development inbox: a local SMTP server that keeps what it receives."""

"""Message content: addresses, the Message value, MIME encoding and serialisation."""

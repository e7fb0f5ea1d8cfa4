"""Delivery: MessageClient, each message's attempts, retries, batch control."""

"""Configuration: MAILER_* settings from the environment and .env, and relay URLs."""

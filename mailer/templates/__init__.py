"""Templates: Jinja2 template sets on disk, and sandboxed template strings."""

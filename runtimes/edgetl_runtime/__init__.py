"""edgetl runtime."""

"""`whatart evaluate`: seeded query protocols run through the service's identification path."""

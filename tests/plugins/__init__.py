"""Plugin modules registered from outside the package, as a user's own package would."""

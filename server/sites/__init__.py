"""Sites, their zones and units."""

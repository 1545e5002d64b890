"""Users, logins and site membership."""

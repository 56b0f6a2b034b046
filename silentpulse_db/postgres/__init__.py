"""What every part needs to talk to PostgreSQL: DSNs, connecting, scratch databases.

- :mod:`.dsn`: validating a DSN, redacting its password, reading it from the environment.
- :mod:`.connect`: connecting with the one retry policy, and the one decision of
  what is transient and what means the connection was lost; closing quietly.
- :mod:`.databases`: creating and dropping databases, and scratch databases.
"""

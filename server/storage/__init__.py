"""PostgreSQL, the truth: the connection pool, the private local cluster and the migrations (`db`), the service's
tables (`store`: cases, references, sightings, matches, the negative bank, tokens, the audit log) and the
tamper-evident evidence log (`chain`)."""

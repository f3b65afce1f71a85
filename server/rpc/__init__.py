"""The gRPC layer: the Matcher servicer, bearer-token roles, health and reflection (`servicer`). It translates
messages to and from `server.service`; the decisions are made there."""

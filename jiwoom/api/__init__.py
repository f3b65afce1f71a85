"""The API layer: the generated jiwoom.v1 code (`proto_gen`, from proto/), the one Matcher client and channel
builder (`client`) and the typed errors with their gRPC statuses (`errors`). It imports nothing else of ours, so
the service, the crawler and the action side can all stand on it."""

"""jiwoom: the composition root (`jiwoom.cli`), the API layer (`jiwoom.api`) and what every side shares
(`jiwoom.shared`). The layers themselves are the top-level packages `server`, `clients` and `ingest`."""

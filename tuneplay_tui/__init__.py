"""The tuneplay terminal app (Textual). Importing this package imports no Textual."""

"""A1111 prompt semantics: parsing (parser), token chunking (tokens) and conditioning (conditioning)."""

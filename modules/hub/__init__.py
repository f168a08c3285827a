"""Hugging Face hub: search, file listings and downloads into Easel's model folders."""

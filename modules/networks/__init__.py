"""Extra networks: LoRA / LyCORIS weight patches, textual-inversion embeddings, VAE choice, their folders."""

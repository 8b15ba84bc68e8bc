"""KV pages for full-attention layers and recurrent-state slots for Gated DeltaNet layers."""

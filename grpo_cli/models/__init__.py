"""Models: loading any Hugging Face causal LM (loading) and grpo's own implementation of the
Llama family (llama: Llama, Qwen2, Qwen3, Mistral)."""

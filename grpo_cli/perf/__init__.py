"""Speed and memory machinery that changes no result: the blocked LM head's log-probs (logprobs),
prompt sharing across a group (shared_prefix), in-place weight gradients (grad_in_place) and heap
trimming (heap). Each has an equality test against the plain computation."""

"""Reference solutions of notebook 08 (lm_head, logits and sampling). Not shown in the student notebook."""
import torch
import torch.nn.functional as F


def apply_temperature(scores, temperature):
    """08.1: the bug was `scores /= temperature`, which overwrites the caller's tensor; divide into a new one."""
    return scores / temperature                                            # (B, V), a new tensor


def top_p_filter(scores, top_p):
    """08.2: best first, keep tokens while the probability of the better ones is still below top_p."""
    probs, order = torch.sort(scores.softmax(-1), descending=True)         # (B, V) each, best first
    mass_before = probs.cumsum(-1) - probs                                 # (B, V) mass of the better tokens
    drop = mass_before >= top_p                                            # the nucleus was already complete
    drop[:, 0] = False                                                     # the best token always stays
    drop = drop.scatter(1, order, drop)                                    # back to vocabulary order
    return scores.masked_fill(drop, float("-inf"))


def sample_next_token(scores, temperature, top_k):
    """08.3: two bugs: `<=` dropped the k-th best token, and a temperature applied after the softmax
    cancels out (multinomial renormalises). Temperature first, then top-k, on scores; then softmax, draw."""
    scores = scores / temperature                                          # (B, V)
    kth_best = torch.topk(scores, top_k, dim=-1).values[:, -1:]           # (B, 1)
    scores = scores.masked_fill(scores < kth_best, float("-inf"))         # keep the k best (and ties)
    probs = F.softmax(scores, dim=-1)                                      # (B, V)
    return torch.multinomial(probs, num_samples=1).squeeze(1)             # (B,)

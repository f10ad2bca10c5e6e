"""Faster paths with the same numbers as the teaching code, kept out of `modeling/`.

    grouped_moe   sort the (token, expert) pairs by expert once, instead of one scan per expert
"""

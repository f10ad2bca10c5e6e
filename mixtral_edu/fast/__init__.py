"""Faster paths with the same numbers as the teaching code, kept out of `modeling/`.

One module per teaching module it speeds up:

    moe   grouped_moe(model): the MoE blocks sort the (token, expert) pairs by expert once,
          instead of scanning the expert mask once per expert (modeling/moe.py), and
          call only the experts some token chose
"""

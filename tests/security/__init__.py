"""ckptgate's security suite: hostile and broken inputs, built at test time, and the figures they give."""

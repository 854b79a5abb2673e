"""How a net learns: the optimizers (Adam, SGD, Muon) in their param groups, the weight average and
lookahead, the one-cycle LR schedule and the LR range test."""

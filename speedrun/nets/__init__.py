"""The nets: the seed's Custom ResNet and the record recipe's net."""

"""Operations: the registry, the one execution path and the HTTP routes built from them."""

"""Portals the kit judges: the reference portal (the executable specification of both step tables) and its
mutants, each breaking one documented behaviour."""

"""Library-neutral core: operations, correlation, safety and parenting. Imports no ORM."""

"""Money: the price table and the cost of a usage record (``prices``), the models it makes
known and the names refused before sending (``models``), the ``--max-cost`` budget
(``budget``) and the bootstrap projection of a pilot onto a whole job (``projection``)."""

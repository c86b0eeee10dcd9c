"""Money: the price table and the cost of a usage record (``prices``), the ``--max-cost``
budget (``budget``) and the bootstrap projection of a pilot onto a whole job
(``projection``)."""

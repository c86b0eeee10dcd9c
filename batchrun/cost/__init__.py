"""Money and models: the price table and the cost of a usage record (``prices``), each model's
request rules as the table gives them (``rules``), the models it makes known, the names and
settings refused before sending and the thinking a model is assumed to do (``models``), the
``--max-cost`` budget (``budget``) and the bootstrap projection of a pilot onto a whole job
(``projection``)."""

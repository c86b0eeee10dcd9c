"""A job's settings: the one table of every setting (``settings``: flag, variable, job key,
type, default, help, layer), job files and precedence resolved into a ``RunConfig``
(``load``, the only reader of the environment), the small frozen settings object of each
layer it is made of (``layers``), and text settings read from ``@FILE`` (``atfile``)."""

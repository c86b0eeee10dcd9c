"""The online run, and what every driver does around sending: the claim on the output
(``claim``: credentials, lock, lease), the resume check against what earlier runs left
(``resume``), the lazy plan of rows to send (``plan``), every-row mistakes caught before
anything is sent (``preflight``), the output a run writes (``output``), the last step
(``finish``), the client and engine built from the job's own settings (``compose``), the
seams in one object (``runtime.Runtime``), a remote input brought here (``fetch``), the
run's counts (``summary``), Ctrl-C (``interrupt``), identical requests answered from
earlier answers (``twins``) and ``validate``. ``online`` puts them together."""
